// Gathers and scatters by index (index_select, gather, scatter_add, embedding backward) and nll_loss
// (kernels/index.cl). Kernels that read indices check them: one out of range sets the stream's fault word
// (ocl_stream_fault), which its next synchronize reports, as the CPU would raise.
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

hal_status_t run_index_select(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                              const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_INT || args[2].kind != HAL_VALUE_TENSOR) {
    return DECLINE("index_select call");
  }
  const hal_tensor_t *w = &args[0].u.tensor, *idx = &args[2].u.tensor;
  int64_t dim = args[1].u.i;
  if (dim < 0) dim += w->ndim ? w->ndim : 1;
  if (idx->ndim > 1 || out->ndim != w->ndim || w->ndim == 0) return DECLINE("index_select of a scalar or by a matrix");
  operand_t o, wi, ii;
  hal_status_t status = tensor_operand(device, out, &o);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, w, &wi);
  if (status == HAL_STATUS_OK) status = typed_operand(device, idx, HAL_DTYPE_I64, &ii);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t og, wg;
  own_geometry(out, out->ndim, out->sizes, &og);
  broadcast_geom(w, w->ndim, out->sizes, &wg);
  for (int32_t d = 0; d < w->ndim; d++) wg.stride[d] = w->strides[d];
  cl_long is0 = idx->ndim ? idx->strides[0] : 0, ie = idx->offset, rows = w->sizes[dim], cn = n;
  cl_int cd = (cl_int)dim, code = ocl_op_code(op);
  cl_mem fault;
  if ((status = ocl_stream_fault(stream, &fault)) != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_INDEX_SELECT], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  buffer_arg(&a, &wi);
  arg(&a, sizeof(wg), &wg);
  buffer_arg(&a, &ii);
  arg(&a, sizeof(is0), &is0);
  arg(&a, sizeof(ie), &ie);
  arg(&a, sizeof(cd), &cd);
  arg(&a, sizeof(rows), &rows);
  arg(&a, sizeof(cn), &cn);
  arg(&a, sizeof(fault), &fault);
  arg(&a, sizeof(code), &code);
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

hal_status_t run_embedding_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                                    const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_TENSOR) return DECLINE("embedding backward call");
  if (args[4].kind == HAL_VALUE_BOOL && args[4].u.i) return DECLINE("scale_grad_by_freq");
  const hal_tensor_t *g = &args[0].u.tensor, *idx = &args[1].u.tensor;
  if (out->ndim != 2 || g->ndim != idx->ndim + 1 || idx->ndim > MAXD) return DECLINE("embedding backward shapes");
  const int64_t cols = out->sizes[1], rows = out->sizes[0], n = numel(idx);
  for (int32_t d = 0; d < idx->ndim; d++) {
    if (g->sizes[d] != idx->sizes[d]) return DECLINE("embedding backward shapes");
  }
  if (g->sizes[g->ndim - 1] != cols) return DECLINE("embedding backward shapes");
  operand_t o, gi, ii;
  hal_status_t status = tensor_operand(device, out, &o);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, g, &gi);
  if (status == HAL_STATUS_OK) status = typed_operand(device, idx, HAL_DTYPE_I64, &ii);
  if (status != HAL_STATUS_OK) return status;
  if (rows * cols == 0) return ocl_ok();
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t gg, ig;
  broadcast_geom(idx, idx->ndim, idx->sizes, &ig);
  for (int32_t d = 0; d < idx->ndim; d++) ig.stride[d] = idx->strides[d];
  broadcast_geom(idx, idx->ndim, idx->sizes, &gg);
  gg.offset = g->offset;
  for (int32_t d = 0; d < idx->ndim; d++) gg.stride[d] = g->strides[d];
  cl_long os0 = out->strides[0], os1 = out->strides[1], oe = out->offset, gcol = g->strides[g->ndim - 1], cn = n,
          cc = cols, cr = rows, pad = args[3].kind == HAL_VALUE_INT ? args[3].u.i : -1;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_EMB_BW], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(os0), &os0);
  arg(&a, sizeof(os1), &os1);
  arg(&a, sizeof(oe), &oe);
  buffer_arg(&a, &gi);
  arg(&a, sizeof(gg), &gg);
  arg(&a, sizeof(gcol), &gcol);
  buffer_arg(&a, &ii);
  arg(&a, sizeof(ig), &ig);
  arg(&a, sizeof(cn), &cn);
  arg(&a, sizeof(cc), &cc);
  arg(&a, sizeof(cr), &cr);
  arg(&a, sizeof(pad), &pad);
  const size_t global[2] = {(size_t)(cols + 15) / 16, (size_t)(rows + 4095) / 4096};  // EMB_COLS, EMB_ROWS
  return enqueue(stream, q, ops, &a, 2, global, NULL, op->decl.name);
}

hal_status_t run_nll(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                     const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results) {
  const int backward = op->kind == K_NLL_BW;
  const hal_value_t* a0 = backward ? &args[1] : &args[0];  // self (log-probabilities)
  const hal_value_t* at = backward ? &args[2] : &args[1];  // target
  const hal_value_t* aw = backward ? &args[3] : &args[2];  // weight?
  const hal_value_t* ar = backward ? &args[4] : &args[3];  // reduction
  const hal_value_t* ai = backward ? &args[5] : &args[4];  // ignore_index
  if (a0->kind != HAL_VALUE_TENSOR || at->kind != HAL_VALUE_TENSOR || ar->kind != HAL_VALUE_INT || ai->kind != HAL_VALUE_INT) {
    return DECLINE("nll_loss call");
  }
  const hal_tensor_t *x = &a0->u.tensor, *t = &at->u.tensor, *w = aw->kind == HAL_VALUE_TENSOR ? &aw->u.tensor : NULL;
  if (x->ndim != 2 || t->ndim != 1 || (w && w->ndim != 1) || ar->u.i < 0 || ar->u.i > 2) return DECLINE("nll_loss of other than [n, classes]");
  if (backward ? num_results != 1 : num_results != 2) return DECLINE("nll_loss results");
  const int64_t n = x->sizes[0], classes = x->sizes[1];
  operand_t xi, ti, wi = {0}, o, extra;
  hal_status_t status = tensor_operand(device, x, &xi);
  if (status == HAL_STATUS_OK) status = typed_operand(device, t, HAL_DTYPE_I64, &ti);
  if (status == HAL_STATUS_OK && w) status = tensor_operand(device, w, &wi);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, &results[0], &o);
  const hal_tensor_t* tw = backward ? (args[6].kind == HAL_VALUE_TENSOR ? &args[6].u.tensor : NULL) : &results[1];
  if (tw == NULL) return DECLINE("nll_loss_backward without total_weight");
  if (status == HAL_STATUS_OK) status = tensor_operand(device, tw, &extra);
  if (status != HAL_STATUS_OK) return status;
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_mem fault = NULL;
  if (!backward && (status = ocl_stream_fault(stream, &fault)) != HAL_STATUS_OK) return status;
  cl_int hw = w != NULL, reduction = (cl_int)ar->u.i, code = ocl_op_code(op);
  cl_long cn = n, cc = classes, ign = ai->u.i, xs0 = x->strides[0], xs1 = x->strides[1], xe = x->offset,
          ts0 = t->strides[0], te = t->offset, ws0 = w ? w->strides[0] : 0, we = w ? w->offset : 0, twe = tw->offset;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[backward ? KN_NLL_BW : KN_NLL], 0, CL_SUCCESS};
  const hal_tensor_t* r0 = &results[0];
  if (!backward) {
    if (n == 0 && reduction == 0) {
      pthread_mutex_unlock(&ops->launch);
      return ocl_ok();
    }
    cl_long oe = r0->offset, os = r0->ndim ? r0->strides[0] : 0;
    buffer_arg(&a, &o);
    arg(&a, sizeof(oe), &oe);
    arg(&a, sizeof(os), &os);
    buffer_arg(&a, &extra);
    arg(&a, sizeof(twe), &twe);
    buffer_arg(&a, &xi);
    arg(&a, sizeof(xs0), &xs0);
    arg(&a, sizeof(xs1), &xs1);
    arg(&a, sizeof(xe), &xe);
  } else {
    const hal_tensor_t* g = args[0].kind == HAL_VALUE_TENSOR ? &args[0].u.tensor : NULL;
    operand_t gi;
    if (g == NULL || (status = tensor_operand(device, g, &gi)) != HAL_STATUS_OK || r0->ndim != 2) {
      pthread_mutex_unlock(&ops->launch);
      return g == NULL || status == HAL_STATUS_OK ? DECLINE("nll_loss_backward shapes") : status;
    }
    if (n * classes == 0) {
      pthread_mutex_unlock(&ops->launch);
      return ocl_ok();
    }
    cl_long os0 = r0->strides[0], os1 = r0->strides[1], oe = r0->offset, gs = g->ndim ? g->strides[0] : 0, ge = g->offset;
    buffer_arg(&a, &o);
    arg(&a, sizeof(os0), &os0);
    arg(&a, sizeof(os1), &os1);
    arg(&a, sizeof(oe), &oe);
    buffer_arg(&a, &gi);
    arg(&a, sizeof(gs), &gs);
    arg(&a, sizeof(ge), &ge);
  }
  buffer_arg(&a, &ti);
  arg(&a, sizeof(ts0), &ts0);
  arg(&a, sizeof(te), &te);
  buffer_arg(&a, &wi);
  arg(&a, sizeof(ws0), &ws0);
  arg(&a, sizeof(we), &we);
  arg(&a, sizeof(hw), &hw);
  if (backward) {
    buffer_arg(&a, &extra);
    arg(&a, sizeof(twe), &twe);
  }
  arg(&a, sizeof(cn), &cn);
  arg(&a, sizeof(cc), &cc);
  arg(&a, sizeof(ign), &ign);
  arg(&a, sizeof(reduction), &reduction);
  if (!backward) {
    arg(&a, sizeof(fault), &fault);
    arg(&a, sizeof(code), &code);
  }
  const size_t local = backward ? 64 : 1;
  const size_t global = backward ? round_up((size_t)(n * classes), 64) : 1;
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

// gather(self, dim, index, sparse_grad) -> out of index's shape, any element size.
hal_status_t run_gather(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                        const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_INT || args[2].kind != HAL_VALUE_TENSOR) {
    return DECLINE("gather call");
  }
  const hal_tensor_t *self = &args[0].u.tensor, *idx = &args[2].u.tensor;
  const int32_t ndim = self->ndim;
  int64_t dim = args[1].u.i;
  if (dim < 0) dim += ndim ? ndim : 1;
  if (ndim == 0 || idx->ndim != ndim || out->ndim != ndim || dim < 0 || dim >= ndim || self->dtype != out->dtype) {
    return DECLINE("gather of a scalar or of other ranks");
  }
  operand_t o, si, ii;
  hal_status_t status = typed_operand(device, out, -1, &o);
  if (status == HAL_STATUS_OK) status = typed_operand(device, self, -1, &si);
  if (status == HAL_STATUS_OK) status = typed_operand(device, idx, HAL_DTYPE_I64, &ii);
  if (status != HAL_STATUS_OK) return status;
  const int64_t n = numel(out);
  if (n == 0) return ocl_ok();
  ocl_ops_t* ops;
  cl_mem fault;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  if ((status = ocl_stream_fault(stream, &fault)) != HAL_STATUS_OK) return status;
  geom_t og, sg, ig;
  own_geometry(out, ndim, idx->sizes, &og);
  own_geometry(self, ndim, idx->sizes, &sg);
  own_geometry(idx, ndim, idx->sizes, &ig);
  cl_int cd = (cl_int)dim, size = (cl_int)dtype_size(out->dtype), code = ocl_op_code(op);
  cl_long rows = self->sizes[dim], cn = n;
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_GATHER], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  buffer_arg(&a, &si);
  arg(&a, sizeof(sg), &sg);
  buffer_arg(&a, &ii);
  arg(&a, sizeof(ig), &ig);
  arg(&a, sizeof(cd), &cd);
  arg(&a, sizeof(rows), &rows);
  arg(&a, sizeof(size), &size);
  arg(&a, sizeof(cn), &cn);
  arg(&a, sizeof(fault), &fault);
  arg(&a, sizeof(code), &code);
  const size_t global = (size_t)n;
  return enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
}

// scatter_add(self, dim, index, src) -> out (a copy of self first), scatter_add_ in place (out is self).
hal_status_t run_scatter_add(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_value_t* args, const hal_tensor_t* out) {
  if (args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_INT || args[2].kind != HAL_VALUE_TENSOR ||
      args[3].kind != HAL_VALUE_TENSOR) {
    return DECLINE("scatter_add call");
  }
  const hal_tensor_t *self = &args[0].u.tensor, *idx = &args[2].u.tensor, *src = &args[3].u.tensor;
  const int32_t ndim = self->ndim;
  int64_t dim = args[1].u.i;
  if (dim < 0) dim += ndim ? ndim : 1;
  if (ndim == 0 || idx->ndim != ndim || src->ndim != ndim || out->ndim != ndim || dim < 0 || dim >= ndim) {
    return DECLINE("scatter_add of a scalar or of other ranks");
  }
  for (int32_t d = 0; d < ndim; d++) {
    if (idx->sizes[d] > src->sizes[d] || (d != dim && idx->sizes[d] > out->sizes[d])) return DECLINE("scatter_add shapes");
  }
  operand_t o, ii, vi, si;
  hal_status_t status = tensor_operand(device, out, &o);
  if (status == HAL_STATUS_OK) status = typed_operand(device, idx, HAL_DTYPE_I64, &ii);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, src, &vi);
  if (status == HAL_STATUS_OK) status = tensor_operand(device, self, &si);
  if (status != HAL_STATUS_OK) return status;
  if (out->data != self->data || out->offset != self->offset) {  // Functional: out starts as self.
    operand_t in[3] = {si, {0}, {0}};
    status = run_elementwise(stream, q, device, &(op_t){{op->decl.name, F32}, K_COPY, EW_COPY}, out, in, 1, 0, 0);
    if (status != HAL_STATUS_OK) return status;
  }
  const int64_t len = idx->sizes[dim], fibers = len ? numel(idx) / len : 0;
  if (fibers == 0) return ocl_ok();
  ocl_ops_t* ops;
  cl_mem fault;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  if ((status = ocl_stream_fault(stream, &fault)) != HAL_STATUS_OK) return status;
  int64_t fiber_sizes[MAXD];
  for (int32_t d = 0; d < ndim; d++) fiber_sizes[d] = d == dim ? 1 : idx->sizes[d];
  geom_t og, ig, sg;  // og also iterates the fibers' space (fg in the kernel).
  own_geometry(out, ndim, fiber_sizes, &og);
  own_geometry(idx, ndim, fiber_sizes, &ig);
  own_geometry(src, ndim, fiber_sizes, &sg);
  cl_long os_d = out->strides[dim], is_d = idx->strides[dim], ss_d = src->strides[dim], cl_len = len,
          rows = out->sizes[dim], cf = fibers;
  cl_int code = ocl_op_code(op);
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_SCATTER_ADD], 0, CL_SUCCESS};
  buffer_arg(&a, &o);
  arg(&a, sizeof(og), &og);
  arg(&a, sizeof(og), &og);
  arg(&a, sizeof(os_d), &os_d);
  buffer_arg(&a, &ii);
  arg(&a, sizeof(ig), &ig);
  arg(&a, sizeof(is_d), &is_d);
  buffer_arg(&a, &vi);
  arg(&a, sizeof(sg), &sg);
  arg(&a, sizeof(ss_d), &ss_d);
  arg(&a, sizeof(cl_len), &cl_len);
  arg(&a, sizeof(rows), &rows);
  arg(&a, sizeof(cf), &cf);
  arg(&a, sizeof(fault), &fault);
  arg(&a, sizeof(code), &code);
  const size_t global = (size_t)fibers;
  return enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
}
