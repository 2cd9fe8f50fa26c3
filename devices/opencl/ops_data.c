// Dtype-generic data movement: fill, copies between dtypes, tril / triu, where, cat, arange (kernels/data.cl).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

// fill_ of any dtype: the value as the element's bytes.
hal_status_t run_fill_bytes(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                            const hal_value_t* value, const hal_tensor_t* out) {
  operand_t o;
  hal_status_t status = typed_operand(device, out, -1, &o);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  cl_ulong pattern = 0;
  const double v = number(value);
  switch (out->dtype) {
    case HAL_DTYPE_BOOL: pattern = v != 0; break;
    case HAL_DTYPE_U8: pattern = (uint8_t)(int64_t)v; break;
    case HAL_DTYPE_I32: { int32_t x = value->kind == HAL_VALUE_FLOAT ? (int32_t)v : (int32_t)value->u.i; memcpy(&pattern, &x, 4); break; }
    case HAL_DTYPE_I64: { int64_t x = value->kind == HAL_VALUE_FLOAT ? (int64_t)v : value->u.i; memcpy(&pattern, &x, 8); break; }
    case HAL_DTYPE_F64: memcpy(&pattern, &v, 8); break;
    case HAL_DTYPE_F32: { float x = (float)v; memcpy(&pattern, &x, 4); break; }
    case HAL_DTYPE_I8: pattern = (uint8_t)(int8_t)(int64_t)v; break;
    case HAL_DTYPE_I16: { int16_t x = (int16_t)(int64_t)v; memcpy(&pattern, &x, 2); break; }
    case HAL_DTYPE_F16: { _Float16 x = (_Float16)v; memcpy(&pattern, &x, 2); break; }
    case HAL_DTYPE_BF16: {  // Round to nearest even, as kernels/common.cl's to_bf16.
      const float f = (float)v;
      uint32_t u;
      memcpy(&u, &f, 4);
      pattern = isnan(f) ? (u >> 16) | 0x40 : (u + 0x7fff + ((u >> 16) & 1)) >> 16;
      break;
    }
    default: return DECLINE("fill_ of dtype %d", (int)out->dtype);
  }
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t g;
  own_geometry(out, out->ndim, out->sizes, &g);
  cl_int size = (cl_int)dtype_size(out->dtype);
  cl_long cn = n;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_FILL], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(g), &g);
  arg(&a, sizeof(pattern), &pattern);
  arg(&a, sizeof(size), &size);
  arg(&a, sizeof(cn), &cn);
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

hal_status_t run_tri(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                     const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR || args[0].u.tensor.ndim < 2 || args[0].u.tensor.dtype != out->dtype) {
    return DECLINE("tril / triu of fewer than 2 dimensions");
  }
  const hal_tensor_t* t = &args[0].u.tensor;
  operand_t o, i;
  hal_status_t status = typed_operand(device, out, -1, &o);
  if (status == HAL_STATUS_OK) status = typed_operand(device, t, -1, &i);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t og, ig;
  own_geometry(out, out->ndim, out->sizes, &og);
  broadcast_geom(t, out->ndim, out->sizes, &ig);
  cl_int size = (cl_int)dtype_size(out->dtype), upper = op->code;
  cl_long cn = n, diag = args[1].kind == HAL_VALUE_INT ? args[1].u.i : 0;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_TRI], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  buffer_arg(&a, &i);
  arg(&a, sizeof(ig), &ig);
  arg(&a, sizeof(size), &size);
  arg(&a, sizeof(cn), &cn);
  arg(&a, sizeof(diag), &diag);
  arg(&a, sizeof(upper), &upper);
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

hal_status_t run_where(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                       const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR) return DECLINE("where without a condition tensor");
  const hal_tensor_t* c = &args[0].u.tensor;
  operand_t o, ci, x, y;
  hal_status_t status = tensor_operand(device, out, &o);
  if (status == HAL_STATUS_OK) status = typed_operand(device, c, HAL_DTYPE_BOOL, &ci);
  if (status == HAL_STATUS_OK) status = value_operand(device, &args[1], &x);
  if (status == HAL_STATUS_OK) status = value_operand(device, &args[2], &y);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  if (c->ndim > out->ndim || (x.t && x.t->ndim > out->ndim) || (y.t && y.t->ndim > out->ndim)) return DECLINE("where shapes");
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t og, cg, xg, yg;
  own_geometry(out, out->ndim, out->sizes, &og);
  broadcast_geom(c, out->ndim, out->sizes, &cg);
  broadcast_geom(x.t, out->ndim, out->sizes, &xg);
  broadcast_geom(y.t, out->ndim, out->sizes, &yg);
  cl_int ux = x.t != NULL && x.mem != NULL, uy = y.t != NULL && y.mem != NULL;
  cl_long cn = n;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_WHERE], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  buffer_arg(&a, &ci);
  arg(&a, sizeof(cg), &cg);
  buffer_arg(&a, &x);
  arg(&a, sizeof(xg), &xg);
  arg(&a, sizeof(float), &x.scalar);
  arg(&a, sizeof(ux), &ux);
  buffer_arg(&a, &y);
  arg(&a, sizeof(yg), &yg);
  arg(&a, sizeof(float), &y.scalar);
  arg(&a, sizeof(uy), &uy);
  arg(&a, sizeof(cn), &cn);
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

hal_status_t run_cat(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                     const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR_LIST || args[1].kind != HAL_VALUE_INT) return DECLINE("cat call");
  int64_t dim = args[1].u.i;
  if (dim < 0) dim += out->ndim;
  if (out->ndim == 0 || dim < 0 || dim >= out->ndim) return DECLINE("cat dimension");
  const op_t copy = {{op->decl.name, F32}, K_COPY, EW_COPY};
  if (out->dtype != HAL_DTYPE_F32 || out->ndim > MAXD) return DECLINE("cat into other than f32");
  for (uint64_t k = 0; k < args[0].u.tensors.size; k++) {  // All checked before any is queued.
    const hal_tensor_t* t = &args[0].u.tensors.data[k];
    if (t->ndim < 0) return DECLINE("an absent tensor in cat");
    if (t->ndim == 1 && t->sizes[0] == 0 && out->ndim != 1) continue;
    if (t->ndim != out->ndim || t->dtype != HAL_DTYPE_F32) return DECLINE("cat of other shapes or dtypes");
  }
  int64_t at = 0;
  for (uint64_t k = 0; k < args[0].u.tensors.size; k++) {
    const hal_tensor_t* t = &args[0].u.tensors.data[k];
    if (t->ndim == 1 && t->sizes[0] == 0 && out->ndim != 1) continue;  // Legacy empty inputs are skipped.
    hal_tensor_t slice = *out;  // The result's slice this input fills: its sizes, the result's strides.
    slice.sizes = t->sizes;
    slice.offset = out->offset + at * out->strides[dim];
    operand_t in[3] = {{0}, {0}, {0}};
    hal_status_t status = tensor_operand(device, t, &in[0]);
    if (status == HAL_STATUS_OK) status = run_elementwise(stream, q, device, &copy, &slice, in, 1, 0, 0);
    if (status != HAL_STATUS_OK) return status;
    at += t->sizes[dim];
  }
  return ocl_ok();
}

hal_status_t run_arange(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                        const hal_value_t* args, const hal_tensor_t* out) {
  const hal_tensor_t* o = args[3].kind == HAL_VALUE_TENSOR ? &args[3].u.tensor : out;
  if (o->ndim != 1 || (o->dtype != HAL_DTYPE_F32 && o->dtype != HAL_DTYPE_I64)) return DECLINE("arange into other than a vector");
  const int is_long = o->dtype == HAL_DTYPE_I64;
  if (is_long && (args[0].kind == HAL_VALUE_FLOAT || args[2].kind == HAL_VALUE_FLOAT)) return DECLINE("arange of floats into i64");
  operand_t oo;
  hal_status_t status = typed_operand(device, o, o->dtype, &oo);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = o->sizes[0];
  if (n == 0) return ocl_ok();
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_long oe = o->offset, os = o->strides[0], si = is_long ? args[0].u.i : 0, ti = is_long ? args[2].u.i : 0, cn = n;
  float start = (float)number(&args[0]), step = (float)number(&args[2]);
  cl_int il = is_long;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_ARANGE], 0, CL_SUCCESS};
  buffer_arg(&a, &oo);
  arg(&a, sizeof(oe), &oe);
  arg(&a, sizeof(os), &os);
  arg(&a, sizeof(start), &start);
  arg(&a, sizeof(step), &step);
  arg(&a, sizeof(si), &si);
  arg(&a, sizeof(ti), &ti);
  arg(&a, sizeof(il), &il);
  arg(&a, sizeof(cn), &cn);
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

// copy_(self, src) between any two of the dtypes cast_any moves (f32 to f32 takes the elementwise kernel),
// src broadcast to self's shape, any strides.
hal_status_t run_cast(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                      const hal_tensor_t* src, const hal_tensor_t* out) {
  static const uint64_t moved = F32 | I64 | BOOL | HAL_DTYPE_BIT(HAL_DTYPE_I32) | HAL_DTYPE_BIT(HAL_DTYPE_U8) |
                                HAL_DTYPE_BIT(HAL_DTYPE_F64) | HAL_DTYPE_BIT(HAL_DTYPE_F16) |
                                HAL_DTYPE_BIT(HAL_DTYPE_BF16) | HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16);
  if (!(moved & HAL_DTYPE_BIT(src->dtype)) || !(moved & HAL_DTYPE_BIT(out->dtype))) {
    return DECLINE("copy_ from dtype %d to %d", (int)src->dtype, (int)out->dtype);
  }
  if ((src->dtype == HAL_DTYPE_F64 || out->dtype == HAL_DTYPE_F64) && !g_devices[device].fp64) {
    return DECLINE("f64 on a device without doubles");
  }
  if (src->ndim > out->ndim || out->ndim > MAXD) return DECLINE("copy_ shapes");
  operand_t o, i;
  hal_status_t status = typed_operand(device, out, out->dtype, &o);
  if (status == HAL_STATUS_OK) status = typed_operand(device, src, src->dtype, &i);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t og, ig;
  own_geometry(out, out->ndim, out->sizes, &og);
  broadcast_geom(src, out->ndim, out->sizes, &ig);
  cl_int odt = out->dtype, idt = src->dtype;
  cl_long cn = n;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_CAST], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  arg(&a, sizeof(odt), &odt);
  buffer_arg(&a, &i);
  arg(&a, sizeof(ig), &ig);
  arg(&a, sizeof(idt), &idt);
  arg(&a, sizeof(cn), &cn);
  const size_t global = (size_t)n;
  return enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
}
