// GEMM and batched GEMM: C[b] = A[b] @ B[b], any strides (kernels/gemm.cl).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define TS 32
#define RTS 8

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
