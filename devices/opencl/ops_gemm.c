// GEMM and batched GEMM: C[b] = A[b] @ B[b], any strides (kernels/gemm.cl). GPUs run gemm_f32, tiles shared in
// local memory; CPU devices run the packed GEMM (pack A, pack B, one work item per cache block), in chunks of
// K, M and N that bound the packed panels' scratch (ocl_stream_scratch) whatever the problem's size.
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define TS 32  // kernels/gemm.cl's gemm_f32 tiles
#define RTS 8

// kernels/gemm.cl's packed blocks; NR = 2 * the build's GEMM_VEC.
#define MR 8
#define MC 64
#define NC 256
// The host's chunks: each a multiple of the kernels' blocks; scratch holds at most KB * (MB + NB) floats a matrix.
#define KB 1024
#define MB 2048
#define NB 2048
#define SCRATCH_MAX (64u << 20)

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static size_t blocks(int64_t n, int64_t block) { return (size_t)((n + block - 1) / block); }

// The packed GEMM of |batch| products of M x K by K x N (strides in elements: [batch, rows, columns]).
static hal_status_t run_packed(hal_stream_t stream, cl_command_queue q, ocl_ops_t* ops, const char* what,
                               const operand_t* a, const int64_t sa[3], int64_t a_elem,
                               const operand_t* b, const int64_t sb[3], int64_t b_elem,
                               const operand_t* c, const int64_t sc[3], int64_t c_elem,
                               int64_t batch, int64_t M, int64_t N, int64_t K) {
  const int64_t NR = 2 * ops->vec;
  const int64_t mb = min64(M, MB), nb = min64(N, NB), kb = min64(K, KB);
  const int64_t a_panel = (int64_t)blocks(mb, MR) * MR * kb, b_panel = (int64_t)blocks(nb, NR) * NR * kb;
  const int64_t per_product = (a_panel + b_panel) * 4;
  const int64_t bb = min64(batch, per_product >= SCRATCH_MAX ? 1 : SCRATCH_MAX / per_product);  // Products a pass.
  cl_mem mem;
  hal_status_t status = ocl_stream_scratch(stream, (uint64_t)(bb * per_product), &mem);
  if (status != HAL_STATUS_OK) return status;
  const operand_t bp = {mem, 0, NULL, 0}, ap = {mem, (cl_ulong)(bb * b_panel * 4), NULL, 0};
  for (int64_t b0 = 0; b0 < batch && status == HAL_STATUS_OK; b0 += bb) {
    const int64_t nbatch = min64(bb, batch - b0);
    for (int64_t n0 = 0; n0 < N && status == HAL_STATUS_OK; n0 += NB) {
      const int64_t n = min64(NB, N - n0);
      for (int64_t k0 = 0; k0 < K && status == HAL_STATUS_OK; k0 += KB) {
        const cl_long k = min64(KB, K - k0), cn = n, pb = b_panel, pa = a_panel;
        cl_long v[4] = {sb[0], sb[1], sb[2], b_elem + b0 * sb[0] + k0 * sb[1] + n0 * sb[2]};
        pthread_mutex_lock(&ops->launch);
        args_t args = {ops->kernels[KN_GEMM_PACK_B], 0, CL_SUCCESS};
        buffer_arg(&args, &bp);
        arg(&args, sizeof(cl_long), &pb);
        buffer_arg(&args, b);
        for (int i = 0; i < 4; i++) arg(&args, sizeof(cl_long), &v[i]);
        arg(&args, sizeof(cl_long), &cn);
        arg(&args, sizeof(cl_long), &k);
        const size_t grid_b[3] = {(size_t)k, blocks(n, NR), (size_t)nbatch};
        if ((status = enqueue(stream, q, ops, &args, 3, grid_b, NULL, what)) != HAL_STATUS_OK) break;
        for (int64_t m0 = 0; m0 < M && status == HAL_STATUS_OK; m0 += MB) {
          const cl_long m = min64(MB, M - m0);
          cl_long u[4] = {sa[0], sa[1], sa[2], a_elem + b0 * sa[0] + m0 * sa[1] + k0 * sa[2]};
          pthread_mutex_lock(&ops->launch);
          args = (args_t){ops->kernels[KN_GEMM_PACK_A], 0, CL_SUCCESS};
          buffer_arg(&args, &ap);
          arg(&args, sizeof(cl_long), &pa);
          buffer_arg(&args, a);
          for (int i = 0; i < 4; i++) arg(&args, sizeof(cl_long), &u[i]);
          arg(&args, sizeof(cl_long), &m);
          arg(&args, sizeof(cl_long), &k);
          const size_t grid_a[3] = {(size_t)k, blocks(m, MR), (size_t)nbatch};
          if ((status = enqueue(stream, q, ops, &args, 3, grid_a, NULL, what)) != HAL_STATUS_OK) break;
          cl_long w[4] = {sc[0], sc[1], sc[2], c_elem + b0 * sc[0] + m0 * sc[1] + n0 * sc[2]};
          const cl_int accumulate = k0 > 0;
          pthread_mutex_lock(&ops->launch);
          args = (args_t){ops->kernels[KN_GEMM_PACKED], 0, CL_SUCCESS};
          buffer_arg(&args, c);
          for (int i = 0; i < 4; i++) arg(&args, sizeof(cl_long), &w[i]);
          buffer_arg(&args, &ap);
          arg(&args, sizeof(cl_long), &pa);
          buffer_arg(&args, &bp);
          arg(&args, sizeof(cl_long), &pb);
          arg(&args, sizeof(cl_long), &m);
          arg(&args, sizeof(cl_long), &cn);
          arg(&args, sizeof(cl_long), &k);
          arg(&args, sizeof(cl_int), &accumulate);
          const size_t one[3] = {1, 1, 1}, grid[3] = {blocks(m, MC), blocks(n, NC), (size_t)nbatch};
          status = enqueue(stream, q, ops, &args, 3, grid, one, what);
        }
      }
    }
  }
  g_cl.clReleaseMemObject(mem);  // The kernels queued hold their own references.
  ocl_stream_temp_done(stream);
  return status;
}

hal_status_t run_gemm(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                      const hal_tensor_t* A, const hal_tensor_t* B, const hal_tensor_t* C) {
  const int batched = A->ndim == 3;
  if (A->ndim != (batched ? 3 : 2) || B->ndim != A->ndim || C->ndim != A->ndim) return DECLINE("mm of %dd x %dd", A->ndim, B->ndim);
  const int64_t batch = batched ? A->sizes[0] : 1, M = A->sizes[batched], K = A->sizes[batched + 1],
                N = B->sizes[batched + 1];
  operand_t a, b, c;
  hal_status_t status = tensor_operand(device, C, &c);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, A, &a);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, B, &b);
  if (status != HAL_STATUS_OK) return status;
  if (M == 0 || N == 0 || batch == 0) return ocl_ok();
  if (K == 0) {  // An empty sum: zeros.
    operand_t none[3] = {{0}, {0}, {0}};
    return run_elementwise(stream, q, device, &(op_t){{op->decl.name, F32}, K_FILL, EW_FILL}, C, none, 0, 0, 0);
  }
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  if (ops->cpu) {
    const int64_t sa[3] = {batched ? A->strides[0] : 0, A->strides[batched], A->strides[batched + 1]};
    const int64_t sb[3] = {batched ? B->strides[0] : 0, B->strides[batched], B->strides[batched + 1]};
    const int64_t sc[3] = {batched ? C->strides[0] : 0, C->strides[batched], C->strides[batched + 1]};
    return run_packed(stream, q, ops, op->decl.name, &a, sa, A->offset, &b, sb, B->offset, &c, sc, C->offset,
                      batch, M, N, K);
  }
  cl_long v[] = {batched ? A->strides[0] : 0, A->strides[batched], A->strides[batched + 1], A->offset,
                 batched ? B->strides[0] : 0, B->strides[batched], B->strides[batched + 1], B->offset,
                 batched ? C->strides[0] : 0, C->strides[batched], C->strides[batched + 1], C->offset, M, N, K};
  pthread_mutex_lock(&ops->launch);
  args_t args = {ops->kernels[KN_GEMM], 0, CL_SUCCESS};
  buffer_arg(&args, &a);
  for (int i = 0; i < 4; i++) arg(&args, sizeof(cl_long), &v[i]);
  buffer_arg(&args, &b);
  for (int i = 4; i < 8; i++) arg(&args, sizeof(cl_long), &v[i]);
  buffer_arg(&args, &c);
  for (int i = 8; i < 15; i++) arg(&args, sizeof(cl_long), &v[i]);
  const size_t local[3] = {RTS, RTS, 1};
  const size_t global[3] = {round_up((size_t)M, TS) / TS * RTS, round_up((size_t)N, TS) / TS * RTS, (size_t)batch};
  return enqueue(stream, q, ops, &args, 3, global, local, op->decl.name);
}
