// Elementwise operators: out = f(a, b, c) with broadcasting, in one kernel of many op codes (kernels/elementwise.cl).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

hal_status_t run_elementwise(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_tensor_t* out, const operand_t in[3], int used, float s0, float s1) {
  operand_t o;
  hal_status_t status = tensor_operand(device, out, &o);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  for (int i = 0; i < used; i++) {
    if (in[i].t && in[i].t->ndim > out->ndim) return DECLINE("an input has more dimensions than the result");
  }
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  int contig = contiguous_as(out, out);
  for (int i = 0; i < 3; i++) contig = contig && (in[i].t == NULL || contiguous_as(in[i].t, out));
  cl_int code = op->code, use[3];
  for (int i = 0; i < 3; i++) use[i] = in[i].t != NULL && in[i].mem != NULL;
  operand_t ins[3] = {in[0], in[1], in[2]};
  if (contig) {  // Linear indices from each tensor's first element: its element offset goes into the byte offset.
    o.byte_offset += (cl_ulong)out->offset * 4;
    for (int i = 0; i < 3; i++) {
      if (ins[i].t) ins[i].byte_offset += (cl_ulong)ins[i].t->offset * 4;
    }
  }
  cl_long count = n;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[contig ? KN_EW_CONTIG : KN_EW], 0, CL_SUCCESS};
  geom_t g;
  buffer_arg(&a, &o);
  if (!contig) {
    broadcast_geom(out, out->ndim, out->sizes, &g);
    for (int32_t d = 0; d < out->ndim; d++) g.stride[d] = out->strides[d];
    arg(&a, sizeof(g), &g);
  }
  for (int i = 0; i < 3; i++) {
    buffer_arg(&a, &ins[i]);
    if (!contig) {
      broadcast_geom(ins[i].t, out->ndim, out->sizes, &g);
      arg(&a, sizeof(g), &g);
    }
    arg(&a, sizeof(float), &ins[i].scalar);
  }
  arg(&a, sizeof(cl_int), &code);
  arg(&a, sizeof(float), &s0);
  arg(&a, sizeof(float), &s1);
  arg(&a, sizeof(cl_long), &count);
  for (int i = 0; i < 3; i++) arg(&a, sizeof(cl_int), &use[i]);
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}
