// Reductions over a set of dimensions, softmax / log-softmax and their backward, layer norm
// (kernels/reduce.cl).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

// Splits |t|'s dimensions into kept and reduced ones (|reduce_mask| bit d); |out| iterates the kept ones.
static void split_geometry(const hal_tensor_t* t, uint32_t reduce_mask, const hal_tensor_t* out, int keepdim,
                           geom_t* og, geom_t* kg, geom_t* rg, int64_t* kept, int64_t* reduced) {
  memset(og, 0, sizeof(*og));
  memset(kg, 0, sizeof(*kg));
  memset(rg, 0, sizeof(*rg));
  *kept = *reduced = 1;
  og->offset = out->offset;
  kg->offset = t->offset;
  int32_t od = 0;
  for (int32_t d = 0; d < t->ndim; d++) {
    if (reduce_mask & (1u << d)) {
      rg->size[rg->ndim] = t->sizes[d];
      rg->stride[rg->ndim++] = t->strides[d];
      *reduced *= t->sizes[d];
      if (keepdim) od++;
    } else {
      og->size[og->ndim] = kg->size[kg->ndim] = t->sizes[d];
      og->stride[og->ndim++] = out->ndim ? out->strides[od++] : 0;
      kg->stride[kg->ndim++] = t->strides[d];
      *kept *= t->sizes[d];
    }
  }
}

hal_status_t run_reduce(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                        const hal_value_t* args, uint64_t num_args, const hal_tensor_t* out) {
  const hal_tensor_t* t = &args[0].u.tensor;
  uint32_t mask = 0;
  if (num_args > 1 && args[1].kind == HAL_VALUE_INT_LIST && args[1].u.ints.size > 0) {
    for (uint64_t i = 0; i < args[1].u.ints.size; i++) {
      int64_t d = args[1].u.ints.data[i];
      if (d < 0) d += t->ndim;
      if (d < 0 || d >= (t->ndim ? t->ndim : 1)) return DECLINE("reduction dimension %lld", (long long)args[1].u.ints.data[i]);
      mask |= 1u << d;
    }
  } else {
    mask = t->ndim ? (1u << t->ndim) - 1 : 0;  // No dims (or an empty list): every dimension.
  }
  const int keepdim = num_args > 2 && args[2].kind == HAL_VALUE_BOOL && args[2].u.i;
  if (num_args > 3 && args[3].kind == HAL_VALUE_DTYPE && args[3].u.dtype != HAL_DTYPE_F32) return DECLINE("a dtype= cast");
  operand_t in, o;
  hal_status_t status = tensor_operand(device, t, &in);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, out, &o);
  if (status != HAL_STATUS_OK) return status;
  geom_t og, kg, rg;
  int64_t kept, reduced;
  split_geometry(t, mask, out, keepdim, &og, &kg, &rg, &kept, &reduced);
  if (kept == 0) return ocl_ok();
  {  // Dimensions merged where they can be: kept ones (output and input together), reduced ones.
    int64_t ks[2][MAXD], rs[1][MAXD];
    memcpy(ks[0], og.stride, sizeof(ks[0]));
    memcpy(ks[1], kg.stride, sizeof(ks[1]));
    coalesce(&og.ndim, og.size, ks, 2);
    memcpy(og.stride, ks[0], sizeof(ks[0]));
    memcpy(kg.stride, ks[1], sizeof(ks[1]));
    kg.ndim = og.ndim;
    memcpy(kg.size, og.size, sizeof(og.size));
    memcpy(rs[0], rg.stride, sizeof(rs[0]));
    coalesce(&rg.ndim, rg.size, rs, 1);
    memcpy(rg.stride, rs[0], sizeof(rs[0]));
  }
  // The kernel's layouts (kernels/reduce.cl): 1, rows: one reduced dimension of stride 1, each row summed 8
  // at a time; 2, columns: one kept dimension of stride 1 (in and out) and one reduced, 8 columns a work item;
  // 0 any other.
  const cl_int layout = rg.ndim == 1 && rg.stride[0] == 1 && op->code != RED_AMAX ? 1
                        : rg.ndim == 1 && og.ndim == 1 && og.stride[0] == 1 && kg.stride[0] == 1 && op->code != RED_AMAX ? 2
                                                                                                          : 0;
  if (reduced == 0 && op->code == RED_AMAX) return DECLINE("amax of an empty dimension");  // The CPU raises.
  if (in.mem == NULL) {  // Empty input: sums of nothing.
    operand_t none[3] = {{0}, {0}, {0}};
    const float fill = op->code == RED_MEAN ? NAN : 0.0f;
    return run_elementwise(stream, q, device, &(op_t){{op->decl.name, F32}, K_FILL, EW_FILL}, out, none, 0, 0, fill);
  }
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_long k = kept, r = reduced;
  cl_int code = op->code;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_REDUCE], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  buffer_arg(&a, &in);
  arg(&a, sizeof(kg), &kg);
  arg(&a, sizeof(rg), &rg);
  arg(&a, sizeof(k), &k);
  arg(&a, sizeof(r), &r);
  arg(&a, sizeof(code), &code);
  arg(&a, sizeof(layout), &layout);
  const size_t global = layout == 2 ? (size_t)((kept + 7) / 8) : (size_t)kept;
  return enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
}

// Geometry of every dimension of |t| but |dim| (the rows), with the length and stride along |dim|.
static void row_geometry(const hal_tensor_t* t, int32_t dim, geom_t* g, int64_t* rows, int64_t* len, int64_t* stride) {
  memset(g, 0, sizeof(*g));
  g->offset = t->offset;
  *rows = 1;
  *len = t->ndim ? t->sizes[dim] : 1;
  *stride = t->ndim ? t->strides[dim] : 0;
  for (int32_t d = 0; d < t->ndim; d++) {
    if (d == dim) continue;
    g->size[g->ndim] = t->sizes[d];
    g->stride[g->ndim++] = t->strides[d];
    *rows *= t->sizes[d];
  }
}

hal_status_t run_softmax(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                         const hal_value_t* args, const hal_tensor_t* out) {
  const int backward = op->kind == K_SOFTMAX_BW;
  const hal_tensor_t* x = &args[0].u.tensor;  // forward: self; backward: grad_output
  const hal_tensor_t* y = backward ? &args[1].u.tensor : NULL;
  const hal_value_t* dimv = &args[backward ? 2 : 1];
  if (dimv->kind != HAL_VALUE_INT) return DECLINE("softmax without an int dim");
  int64_t dim = dimv->u.i;
  if (dim < 0) dim += x->ndim ? x->ndim : 1;
  if (!backward && args[2].kind == HAL_VALUE_BOOL && args[2].u.i) return DECLINE("half_to_float");
  if (backward && args[3].kind == HAL_VALUE_DTYPE && args[3].u.dtype != HAL_DTYPE_F32) return DECLINE("input_dtype");
  operand_t o, xi, yi;
  hal_status_t status = tensor_operand(device, out, &o);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, x, &xi);
  if (status == HAL_STATUS_OK && y) status = tensor_operand(device, y, &yi);
  if (status != HAL_STATUS_OK) return status;
  if (numel(out) == 0) return ocl_ok();
  geom_t og, xg, yg;
  int64_t rows, len, os, xs, ys = 0;
  row_geometry(out, (int32_t)dim, &og, &rows, &len, &os);
  row_geometry(x, (int32_t)dim, &xg, &rows, &len, &xs);
  if (y) row_geometry(y, (int32_t)dim, &yg, &rows, &len, &ys);
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_long r = rows, l = len, cos_ = os, cxs = xs, cys = ys;
  cl_int log_softmax = op->code;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[backward ? KN_SOFTMAX_BW : KN_SOFTMAX], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  arg(&a, sizeof(cos_), &cos_);
  buffer_arg(&a, &xi);
  arg(&a, sizeof(xg), &xg);
  arg(&a, sizeof(cxs), &cxs);
  if (backward) {
    buffer_arg(&a, &yi);
    arg(&a, sizeof(yg), &yg);
    arg(&a, sizeof(cys), &cys);
  }
  arg(&a, sizeof(r), &r);
  arg(&a, sizeof(l), &l);
  arg(&a, sizeof(log_softmax), &log_softmax);
  const size_t local = 32, global = round_up((size_t)rows, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

// The geometry of |t|'s first |outer_dims| dimensions (the rows).
static void outer_geometry(const hal_tensor_t* t, int32_t outer_dims, geom_t* g, int64_t* rows) {
  memset(g, 0, sizeof(*g));
  g->offset = t->offset;
  *rows = 1;
  for (int32_t d = 0; d < outer_dims; d++) {
    g->size[g->ndim] = t->sizes[d];
    g->stride[g->ndim++] = t->strides[d];
    *rows *= t->sizes[d];
  }
}

// Whether |t|'s last |dims| dimensions are contiguous (so a row is |len| consecutive elements).
static int inner_contiguous(const hal_tensor_t* t, int32_t dims, int64_t* len) {
  int64_t expected = 1;
  for (int32_t d = t->ndim - 1; d >= t->ndim - dims; d--) {
    if (t->sizes[d] != 1 && t->strides[d] != expected) return 0;
    expected *= t->sizes[d];
  }
  *len = expected;
  return 1;
}

hal_status_t run_layer_norm(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                            const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results) {
  if (num_results != 3 || args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_INT_LIST) return DECLINE("layer norm call");
  const hal_tensor_t* x = &args[0].u.tensor;
  const int32_t k = (int32_t)args[1].u.ints.size;
  if (k < 1 || k > x->ndim) return DECLINE("layer norm over %d dimensions", k);
  int64_t len, olen;
  if (!inner_contiguous(x, k, &len) || !inner_contiguous(&results[0], k, &olen)) return DECLINE("a non-contiguous row");
  const hal_tensor_t *w = args[2].kind == HAL_VALUE_TENSOR ? &args[2].u.tensor : NULL,
                     *b = args[3].kind == HAL_VALUE_TENSOR ? &args[3].u.tensor : NULL;
  if ((w && numel(w) != len) || (b && numel(b) != len)) return DECLINE("weight / bias shapes");
  if ((w && !inner_contiguous(w, w->ndim, &olen)) || (b && !inner_contiguous(b, b->ndim, &olen))) return DECLINE("strided weight");
  if (!contiguous_as(&results[1], &results[1]) || !contiguous_as(&results[2], &results[2])) return DECLINE("mean / rstd layout");
  operand_t o, m, r, xi, wi = {0}, bi = {0};
  hal_status_t status = tensor_operand(device, &results[0], &o);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, &results[1], &m);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, &results[2], &r);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, x, &xi);
  if (status == HAL_STATUS_OK && w) status = tensor_operand(device, w, &wi);
  if (status == HAL_STATUS_OK && b) status = tensor_operand(device, b, &bi);
  if (status != HAL_STATUS_OK) return status;
  geom_t og, xg;
  int64_t rows;
  outer_geometry(&results[0], x->ndim - k, &og, &rows);
  outer_geometry(x, x->ndim - k, &xg, &rows);
  int64_t strides[2][MAXD];  // The rows' dimensions merged: usually one, indexed without a division.
  memcpy(strides[0], og.stride, sizeof(strides[0]));
  memcpy(strides[1], xg.stride, sizeof(strides[1]));
  coalesce(&og.ndim, og.size, strides, 2);
  memcpy(og.stride, strides[0], sizeof(strides[0]));
  memcpy(xg.stride, strides[1], sizeof(strides[1]));
  xg.ndim = og.ndim;
  memcpy(xg.size, og.size, sizeof(og.size));
  if (rows == 0) return ocl_ok();
  if (len == 0) return DECLINE("empty rows");
  m.byte_offset += (cl_ulong)results[1].offset * 4;
  r.byte_offset += (cl_ulong)results[2].offset * 4;
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_long we = w ? w->offset : 0, be = b ? b->offset : 0, cr = rows, cl_ = len;
  cl_int hw = w != NULL, hb = b != NULL;
  float eps = (float)number(&args[4]);
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_LAYER_NORM], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  buffer_arg(&a, &m);
  buffer_arg(&a, &r);
  buffer_arg(&a, &xi);
  arg(&a, sizeof(xg), &xg);
  buffer_arg(&a, &wi);
  arg(&a, sizeof(we), &we);
  arg(&a, sizeof(hw), &hw);
  buffer_arg(&a, &bi);
  arg(&a, sizeof(be), &be);
  arg(&a, sizeof(hb), &hb);
  arg(&a, sizeof(cr), &cr);
  arg(&a, sizeof(cl_), &cl_);
  arg(&a, sizeof(eps), &eps);
  const size_t local = 16, global = round_up((size_t)rows, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

// Whether |t|'s first |outer| dimensions step through memory at one stride (the rows of a matrix): its stride.
static int uniform_rows(const hal_tensor_t* t, int32_t outer, int64_t* stride) {
  int64_t s = 0, span = 1;
  int have = 0;
  for (int32_t d = outer - 1; d >= 0; d--) {
    if (t->sizes[d] == 1) continue;
    if (!have) {
      s = t->strides[d], span = t->sizes[d], have = 1;
    } else {
      if (t->strides[d] != s * span) return 0;
      span *= t->sizes[d];
    }
  }
  *stride = s;
  return 1;
}

// An operand whose element offset is folded into its byte offset (kernels that index from its first element).
static hal_status_t flat_operand(int32_t device, const hal_tensor_t* t, operand_t* out) {
  hal_status_t status = tensor_operand(device, t, out);
  out->byte_offset += (cl_ulong)t->offset * 4;
  return status;
}

hal_status_t run_layer_norm_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                                     const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results) {
  if (num_results != 3 || args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_TENSOR ||
      args[2].kind != HAL_VALUE_INT_LIST || args[3].kind != HAL_VALUE_TENSOR || args[4].kind != HAL_VALUE_TENSOR) {
    return DECLINE("layer norm backward call");
  }
  const hal_tensor_t *dy = &args[0].u.tensor, *x = &args[1].u.tensor, *mean = &args[3].u.tensor,
                     *rstd = &args[4].u.tensor, *w = args[5].kind == HAL_VALUE_TENSOR ? &args[5].u.tensor : NULL;
  int present[3];
  for (int i = 0; i < 3; i++) {
    present[i] = results[i].ndim >= 0 && results[i].data != NULL &&
                 (args[7].kind != HAL_VALUE_INT_LIST || args[7].u.ints.size != 3 || args[7].u.ints.data[i]);
  }
  const int32_t k = (int32_t)args[2].u.ints.size, outer = x->ndim - k;
  if (k < 1 || k > x->ndim || dy->ndim != x->ndim) return DECLINE("layer norm backward over %d dimensions", k);
  int64_t len, l2, rows = 1, xs, ys, ms, rs, os = 0;
  for (int32_t d = 0; d < outer; d++) rows *= x->sizes[d];
  if (!inner_contiguous(x, k, &len) || !inner_contiguous(dy, k, &l2) || !uniform_rows(x, outer, &xs) ||
      !uniform_rows(dy, outer, &ys)) {
    return DECLINE("layer norm backward of non-contiguous rows");
  }
  if (!uniform_rows(mean, outer, &ms) || !uniform_rows(rstd, outer, &rs) || (rows > 1 && (ms != 1 || rs != 1))) {
    return DECLINE("layer norm backward's mean / rstd layout");
  }
  if (present[0] && (!inner_contiguous(&results[0], k, &l2) || !uniform_rows(&results[0], outer, &os))) {
    return DECLINE("layer norm backward's grad_input layout");
  }
  if ((w && (numel(w) != len || !inner_contiguous(w, w->ndim, &l2))) ||
      (present[1] && !inner_contiguous(&results[1], results[1].ndim, &l2)) ||
      (present[2] && !inner_contiguous(&results[2], results[2].ndim, &l2))) {
    return DECLINE("layer norm backward's weight layout");
  }
  operand_t o = {0}, gw = {0}, gb = {0}, yi, xi, mi, ri, wi = {0};
  hal_status_t status = flat_operand(device, dy, &yi);
  if (status == HAL_STATUS_OK) status = flat_operand(device, x, &xi);
  if (status == HAL_STATUS_OK) status = flat_operand(device, mean, &mi);
  if (status == HAL_STATUS_OK) status = flat_operand(device, rstd, &ri);
  if (status == HAL_STATUS_OK && w) status = flat_operand(device, w, &wi);
  if (status == HAL_STATUS_OK && present[0]) status = flat_operand(device, &results[0], &o);
  if (status == HAL_STATUS_OK && present[1]) status = flat_operand(device, &results[1], &gw);
  if (status == HAL_STATUS_OK && present[2]) status = flat_operand(device, &results[2], &gb);
  if (status != HAL_STATUS_OK) return status;
  if (len == 0) return DECLINE("empty rows");
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_long cr = rows, cl_ = len, cxs = xs, cys = ys, cos_ = os;
  if (present[0] && rows > 0) {
    cl_int hw = w != NULL;
    pthread_mutex_lock(&ops->launch);
    args_t a = {ops->kernels[KN_LAYER_NORM_BW], 0, CL_SUCCESS};
    buffer_arg(&a, &o);
    arg(&a, sizeof(cos_), &cos_);
    buffer_arg(&a, &yi);
    arg(&a, sizeof(cys), &cys);
    buffer_arg(&a, &xi);
    arg(&a, sizeof(cxs), &cxs);
    buffer_arg(&a, &mi);
    buffer_arg(&a, &ri);
    buffer_arg(&a, &wi);
    arg(&a, sizeof(hw), &hw);
    arg(&a, sizeof(cr), &cr);
    arg(&a, sizeof(cl_), &cl_);
    const size_t global = (size_t)rows;
    if ((status = enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name)) != HAL_STATUS_OK) return status;
  }
  if (present[1] || present[2]) {
    cl_int hw = present[1], hb = present[2];
    pthread_mutex_lock(&ops->launch);
    args_t a = {ops->kernels[KN_LAYER_NORM_BW_PARAMS], 0, CL_SUCCESS};
    buffer_arg(&a, &gw);
    arg(&a, sizeof(hw), &hw);
    buffer_arg(&a, &gb);
    arg(&a, sizeof(hb), &hb);
    buffer_arg(&a, &yi);
    arg(&a, sizeof(cys), &cys);
    buffer_arg(&a, &xi);
    arg(&a, sizeof(cxs), &cxs);
    buffer_arg(&a, &mi);
    buffer_arg(&a, &ri);
    arg(&a, sizeof(cr), &cr);
    arg(&a, sizeof(cl_), &cl_);
    const size_t global = (size_t)((len + 7) / 8);  // 8 columns a work item.
    return enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
  }
  return ocl_ok();
}
