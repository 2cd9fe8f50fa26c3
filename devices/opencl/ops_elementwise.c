// Elementwise operators: out = f(a, b, c) with broadcasting, in one kernel of many op codes (kernels/elementwise.cl):
// contiguous operands index linearly; others run as rows of the innermost dimension, dimensions merged first.
// Results of f16 / bf16 and operands of other dtypes (promoted to a floating result) take ew_any: computed in
// float, element by element.
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

hal_status_t run_elementwise(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_tensor_t* out, const operand_t in[3], int used, float s0, float s1) {
  const int floating = out->dtype == HAL_DTYPE_F32 || out->dtype == HAL_DTYPE_F16 || out->dtype == HAL_DTYPE_BF16;
  if (!floating) return DECLINE("an elementwise result of dtype %d (f32, f16 and bf16 are computed)", (int)out->dtype);
  operand_t o;
  hal_status_t status = typed_operand(device, out, out->dtype, &o);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  int all_f32 = out->dtype == HAL_DTYPE_F32;
  for (int i = 0; i < used; i++) {
    if (in[i].t && in[i].t->ndim > out->ndim) return DECLINE("an input has more dimensions than the result");
    if (in[i].t && in[i].t->dtype != HAL_DTYPE_F32) all_f32 = 0;
  }
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  int contig = all_f32 && contiguous_as(out, out);  // Other dtypes take ew_any (strided, element by element).
  for (int i = 0; i < 3; i++) contig = contig && (in[i].t == NULL || contiguous_as(in[i].t, out));
  cl_int code = op->code, use[3];
  for (int i = 0; i < 3; i++) use[i] = in[i].t != NULL && in[i].mem != NULL;
  // An operand that is a scalar (or unused) reads the result's elements, and takes the scalar instead.
  operand_t ins[3] = {in[0], in[1], in[2]};
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[contig ? KN_EW_CONTIG : all_f32 ? KN_EW : KN_EW_ANY], 0, CL_SUCCESS};
  if (contig) {  // Linear indices from each tensor's first element: its element offset goes into the byte offset.
    o.byte_offset += (cl_ulong)out->offset * 4;
    buffer_arg(&a, &o);
    for (int i = 0; i < 3; i++) {
      if (use[i]) ins[i].byte_offset += (cl_ulong)ins[i].t->offset * 4;
      buffer_arg(&a, use[i] ? &ins[i] : &o);
      arg(&a, sizeof(float), &ins[i].scalar);
    }
  } else {
    int64_t sizes[MAXD], strides[4][MAXD];
    int32_t ndim = out->ndim;
    geom_t g;
    for (int32_t d = 0; d < ndim; d++) sizes[d] = out->sizes[d], strides[0][d] = out->strides[d];
    for (int i = 0; i < 3; i++) {
      broadcast_geom(use[i] ? ins[i].t : out, out->ndim, out->sizes, &g);
      for (int32_t d = 0; d < ndim; d++) strides[i + 1][d] = use[i] ? g.stride[d] : out->strides[d];
    }
    coalesce(&ndim, sizes, strides, 4);
    const int64_t inner = ndim ? sizes[ndim - 1] : 1;
    int64_t rows = 1;
    for (int32_t d = 0; d + 1 < ndim; d++) rows *= sizes[d];
    for (int t = 0; t < 4; t++) {
      const hal_tensor_t* tensor = t == 0 || !use[t - 1] ? out : ins[t - 1].t;
      memset(&g, 0, sizeof(g));
      g.ndim = ndim ? ndim - 1 : 0;
      g.offset = tensor->offset;
      for (int32_t d = 0; d < g.ndim; d++) g.size[d] = sizes[d], g.stride[d] = strides[t][d];
      const cl_long inner_stride = ndim ? strides[t][ndim - 1] : 0;
      buffer_arg(&a, t == 0 || !use[t - 1] ? &o : &ins[t - 1]);
      arg(&a, sizeof(g), &g);
      arg(&a, sizeof(inner_stride), &inner_stride);
      if (t > 0) arg(&a, sizeof(float), &ins[t - 1].scalar);
    }
    const cl_long count = inner;
    arg(&a, sizeof(cl_int), &code);
    arg(&a, sizeof(float), &s0);
    arg(&a, sizeof(float), &s1);
    arg(&a, sizeof(cl_long), &count);
    for (int i = 0; i < 3; i++) arg(&a, sizeof(cl_int), &use[i]);
    if (!all_f32) {  // Each operand's dtype; an unused one reads the result's elements.
      cl_int dts[4] = {out->dtype, 0, 0, 0};
      for (int i = 0; i < 3; i++) dts[i + 1] = use[i] ? ins[i].t->dtype : out->dtype;
      for (int i = 0; i < 4; i++) arg(&a, sizeof(cl_int), &dts[i]);
    }
    const size_t global[2] = {(size_t)((inner + ops->chunk - 1) / ops->chunk), (size_t)rows};
    return enqueue(stream, q, ops, &a, 2, global, NULL, op->decl.name);
  }
  const cl_long count = n;
  arg(&a, sizeof(cl_int), &code);
  arg(&a, sizeof(float), &s0);
  arg(&a, sizeof(float), &s1);
  arg(&a, sizeof(cl_long), &count);
  for (int i = 0; i < 3; i++) arg(&a, sizeof(cl_int), &use[i]);
  const size_t global = (size_t)((n + ops->chunk - 1) / ops->chunk);
  return enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
}
