// Convolutions and pooling (kernels/conv.cl). aten::convolution and aten::convolution_backward, 1-d and 2-d,
// any stride, padding, dilation and groups (not transposed): im2col of a chunk of images into the stream's
// temporary memory, then GEMMs (ops_gemm.c) per group — the output as a batched GEMM of the weight with the
// columns, the weight's gradient as one GEMM of the output gradient with the columns, the input's gradient as
// the weight's transpose times the output gradient, gathered back by col2im. Chunks hold at most TEMP_MAX bytes
// of columns. aten::max_pool2d_with_indices and its backward, 2-d.
#include <string.h>

#include "ops.h"

#define TEMP_MAX (64ll << 20)

typedef struct conv_t {
  int64_t N, C, H, W, Cout, G, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW;
} conv_t;

// A 3-d (1-d convolution: N, C, W) or 4-d tensor as (N, C, H, W), H = 1 with stride 0 for the former.
typedef struct nchw_t {
  int64_t size[4], stride[4];
} nchw_t;

static int as_nchw(const hal_tensor_t* t, int spatial, nchw_t* v) {
  if (t->ndim != spatial + 2) return 0;
  for (int d = 0, s = 0; d < 4; d++) {
    const int missing = spatial == 1 && d == 2;
    v->size[d] = missing ? 1 : t->sizes[s];
    v->stride[d] = missing ? 0 : t->strides[s];
    s += !missing;
  }
  return 1;
}

// (H, W) of a stride / padding / dilation / kernel_size list; |fill| for the H of a 1-d one; a 2-d list of one
// value is that value twice; an empty list is |empty| (max pooling's stride: the kernel size).
static int pair(const hal_value_t* v, int spatial, int64_t fill, const int64_t* empty, int64_t out[2]) {
  if (v->kind != HAL_VALUE_INT_LIST) return 0;
  const uint64_t n = v->u.ints.size;
  if (n == 0 && empty) return out[0] = empty[0], out[1] = empty[1], 1;
  if (spatial == 1) return n == 1 ? (out[0] = fill, out[1] = v->u.ints.data[0], 1) : 0;
  if (n == 1) return out[0] = out[1] = v->u.ints.data[0], 1;
  return n == 2 ? (out[0] = v->u.ints.data[0], out[1] = v->u.ints.data[1], 1) : 0;
}

// The convolution's geometry from its input, weight, stride, padding, dilation, transposed and groups.
static hal_status_t parse(const hal_value_t* input, const hal_value_t* weight, const hal_value_t* params,
                          conv_t* cv, nchw_t* x, int* spatial) {
  if (input->kind != HAL_VALUE_TENSOR || weight->kind != HAL_VALUE_TENSOR) return DECLINE("convolution of non-tensors");
  const hal_tensor_t *in = &input->u.tensor, *w = &weight->u.tensor;
  *spatial = in->ndim - 2;
  if (*spatial != 1 && *spatial != 2) return DECLINE("%d-d convolution (1-d and 2-d are computed)", (int)in->ndim - 2);
  nchw_t wv;
  int64_t s[2], p[2], d[2];
  if (!as_nchw(in, *spatial, x) || !as_nchw(w, *spatial, &wv) || !pair(&params[0], *spatial, 1, NULL, s) ||
      !pair(&params[1], *spatial, 0, NULL, p) || !pair(&params[2], *spatial, 1, NULL, d) ||
      params[3].kind != HAL_VALUE_BOOL || params[5].kind != HAL_VALUE_INT) {
    return DECLINE("convolution arguments");
  }
  if (params[3].u.i) return DECLINE("transposed convolution");
  if (in->dtype != HAL_DTYPE_F32 || w->dtype != HAL_DTYPE_F32) return DECLINE("convolution of other than f32");
  if (!contiguous_as(w, w)) return DECLINE("convolution with a non-contiguous weight");
  *cv = (conv_t){x->size[0], x->size[1], x->size[2], x->size[3], wv.size[0], params[5].u.i, wv.size[2], wv.size[3],
                 s[0], s[1], p[0], p[1], d[0], d[1], 0, 0};
  if (cv->G < 1 || cv->C != wv.size[1] * cv->G || cv->Cout % cv->G) return DECLINE("convolution groups");
  if (cv->SH < 1 || cv->SW < 1 || cv->DH < 1 || cv->DW < 1 || cv->PH < 0 || cv->PW < 0) return DECLINE("convolution strides");
  cv->OH = (cv->H + 2 * cv->PH - cv->DH * (cv->KH - 1) - 1) / cv->SH + 1;
  cv->OW = (cv->W + 2 * cv->PW - cv->DW * (cv->KW - 1) - 1) / cv->SW + 1;
  return cv->OH > 0 && cv->OW > 0 ? HAL_STATUS_OK : DECLINE("convolution with an empty output");
}

// The stride of p = oh * OW + ow in a (N, C, OH, OW) tensor, where one stride walks it; 0 where none does.
static int64_t plane_stride(const nchw_t* v) {
  if (v->size[3] == 1) return v->size[2] == 1 ? 1 : v->stride[2];
  if (v->size[2] == 1 || v->stride[2] == v->size[3] * v->stride[3]) return v->stride[3];
  return 0;
}

static hal_tensor_t view(void* data, int32_t ndim, const int64_t* sizes, const int64_t* strides, int64_t offset) {
  return (hal_tensor_t){data, HAL_DTYPE_F32, ndim, sizes, strides, offset};
}

static hal_status_t im2col(hal_stream_t stream, cl_command_queue q, ocl_ops_t* ops, const char* what,
                           const operand_t* x, const nchw_t* xv, int64_t x_elem, const operand_t* col,
                           const conv_t* cv, int64_t nb) {
  cl_long v[] = {x_elem, xv->stride[0], xv->stride[1], xv->stride[2], xv->stride[3]};
  cl_long g[] = {cv->H, cv->W, cv->KH, cv->KW, cv->SH, cv->SW, cv->PH, cv->PW, cv->DH, cv->DW, cv->OH, cv->OW, nb};
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_IM2COL], 0, CL_SUCCESS};
  buffer_arg(&a, x);
  for (int i = 0; i < 5; i++) arg(&a, sizeof(cl_long), &v[i]);
  buffer_arg(&a, col);
  for (int i = 0; i < 13; i++) arg(&a, sizeof(cl_long), &g[i]);
  const size_t grid[3] = {(size_t)((cv->OH * cv->OW + ops->chunk - 1) / ops->chunk), (size_t)(cv->C * cv->KH * cv->KW),
                          (size_t)nb};
  return enqueue(stream, q, ops, &a, 3, grid, NULL, what);
}

static hal_status_t col2im(hal_stream_t stream, cl_command_queue q, ocl_ops_t* ops, const char* what,
                           const operand_t* col, const operand_t* gx, const nchw_t* gv, int64_t gx_elem,
                           const conv_t* cv, int64_t nb) {
  cl_long v[] = {gx_elem, gv->stride[0], gv->stride[1], gv->stride[2], gv->stride[3]};
  cl_long g[] = {cv->H, cv->W, cv->KH, cv->KW, cv->SH, cv->SW, cv->PH, cv->PW, cv->DH, cv->DW, cv->OH, cv->OW, nb};
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[KN_COL2IM], 0, CL_SUCCESS};
  buffer_arg(&a, col);
  buffer_arg(&a, gx);
  for (int i = 0; i < 5; i++) arg(&a, sizeof(cl_long), &v[i]);
  for (int i = 0; i < 13; i++) arg(&a, sizeof(cl_long), &g[i]);
  const size_t grid[3] = {(size_t)((cv->H * cv->W + ops->chunk - 1) / ops->chunk), (size_t)cv->C, (size_t)nb};
  return enqueue(stream, q, ops, &a, 3, grid, NULL, what);
}

// Images per chunk: the columns (and |extra_rows| more rows of the same shape) in TEMP_MAX, at least one.
static int64_t chunk_images(const conv_t* cv, int64_t extra_rows, int64_t fixed_bytes) {
  const int64_t per_image = (cv->C * cv->KH * cv->KW + extra_rows) * cv->OH * cv->OW * 4;
  const int64_t fit = (TEMP_MAX - fixed_bytes) / (per_image ? per_image : 1);
  return fit < 1 ? 1 : fit > cv->N ? cv->N : fit;
}

// aten::convolution(input, weight, bias?, stride, padding, dilation, transposed, output_padding, groups).
hal_status_t run_convolution(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_value_t* args, const hal_tensor_t* out) {
  conv_t cv;
  nchw_t xv, yv;
  int spatial;
  hal_status_t status = parse(&args[0], &args[1], &args[3], &cv, &xv, &spatial);
  if (status != HAL_STATUS_OK) return status;
  if (!as_nchw(out, spatial, &yv) || yv.size[1] != cv.Cout || yv.size[2] != cv.OH || yv.size[3] != cv.OW) {
    return DECLINE("convolution output of another shape");
  }
  const int64_t yp = plane_stride(&yv);
  if (yp == 0) return DECLINE("convolution output whose planes no one stride walks");
  const hal_tensor_t *x = &args[0].u.tensor, *w = &args[1].u.tensor;
  const hal_tensor_t* bias = args[2].kind == HAL_VALUE_TENSOR ? &args[2].u.tensor : NULL;
  if (args[2].kind != HAL_VALUE_TENSOR && args[2].kind != HAL_VALUE_NONE) return DECLINE("convolution bias");
  if (bias && (bias->ndim != 1 || bias->sizes[0] != cv.Cout)) return DECLINE("convolution bias of another shape");
  operand_t xo, yo, bo;
  if ((status = tensor_operand(device, x, &xo)) != HAL_STATUS_OK) return status;
  if ((status = tensor_operand(device, out, &yo)) != HAL_STATUS_OK) return status;
  if (bias && (status = tensor_operand(device, bias, &bo)) != HAL_STATUS_OK) return status;
  if (numel(out) == 0) return ocl_ok();
  if (numel(x) == 0 || cv.C == 0) return DECLINE("convolution over no input channels");
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;

  const int64_t ohw = cv.OH * cv.OW, Cg = cv.C / cv.G, Coutg = cv.Cout / cv.G, Kg = Cg * cv.KH * cv.KW;
  const int64_t nb = chunk_images(&cv, 0, 0);
  void* temp;
  if ((status = ocl_stream_temp(stream, (uint64_t)(nb * cv.C * cv.KH * cv.KW * ohw * 4), &temp)) != HAL_STATUS_OK) {
    return status;
  }
  const hal_tensor_t all = view(temp, 1, (int64_t[]){nb * cv.C * cv.KH * cv.KW * ohw}, (int64_t[]){1}, 0);
  operand_t col;
  status = tensor_operand(device, &all, &col);
  for (int64_t n0 = 0; n0 < cv.N && status == HAL_STATUS_OK; n0 += nb) {
    const int64_t m = cv.N - n0 < nb ? cv.N - n0 : nb;
    status = im2col(stream, q, ops, op->decl.name, &xo, &xv, x->offset + n0 * xv.stride[0], &col, &cv, m);
    for (int64_t g = 0; g < cv.G && status == HAL_STATUS_OK; g++) {
      const int64_t as[3] = {m, Coutg, Kg}, ast[3] = {0, Kg, 1};
      const int64_t bs[3] = {m, Kg, ohw}, bst[3] = {ohw, m * ohw, 1};
      const int64_t cs[3] = {m, Coutg, ohw}, cst[3] = {yv.stride[0], yv.stride[1], yp};
      const hal_tensor_t A = view(w->data, 3, as, ast, w->offset + g * Coutg * Kg);
      const hal_tensor_t B = view(temp, 3, bs, bst, g * Kg * m * ohw);
      const hal_tensor_t C = view(out->data, 3, cs, cst, out->offset + n0 * yv.stride[0] + g * Coutg * yv.stride[1]);
      status = run_gemm(stream, q, device, op, &A, &B, &C);
    }
  }
  if (status == HAL_STATUS_OK && bias) {  // out += bias, broadcast over (N, H, W).
    const int64_t bsz[4] = {1, cv.Cout, 1, 1}, bst[4] = {0, bias->strides[0], 0, 0};  // Its first 3 for 1-d.
    const hal_tensor_t b = view(bias->data, out->ndim, bsz, bst, bias->offset);
    operand_t in[3] = {yo, bo, {0}};
    in[1].t = &b;
    status = run_elementwise(stream, q, device, &(op_t){{op->decl.name, F32}, K_BINARY, EW_ADD}, out, in, 2, 1.0f, 0);
  }
  ocl_stream_temp_done(stream);
  return status;
}

// aten::convolution_backward(grad_output, input, weight, bias_sizes?, stride, padding, dilation, transposed,
// output_padding, groups, output_mask) -> (grad_input, grad_weight, grad_bias), each absent where masked.
// Per chunk of images, the temporary memory holds the output gradient transposed to (Cout, images, OH * OW)
// and the columns (C * KH * KW, images, OH * OW); the weight's gradient of chunks after the first is summed into
// it from a third part.
hal_status_t run_convolution_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                                      const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results) {
  conv_t cv;
  nchw_t xv, gov, gxv;
  int spatial;
  hal_status_t status = parse(&args[1], &args[2], &args[4], &cv, &xv, &spatial);
  if (status != HAL_STATUS_OK) return status;
  if (num_results != 3 || args[0].kind != HAL_VALUE_TENSOR) return DECLINE("convolution_backward call");
  const hal_tensor_t *go = &args[0].u.tensor, *x = &args[1].u.tensor, *w = &args[2].u.tensor;
  const hal_tensor_t *gx = results[0].ndim >= 0 ? &results[0] : NULL, *gw = results[1].ndim >= 0 ? &results[1] : NULL,
                     *gb = results[2].ndim >= 0 ? &results[2] : NULL;
  if (!as_nchw(go, spatial, &gov) || gov.size[0] != cv.N || gov.size[1] != cv.Cout || gov.size[2] != cv.OH ||
      gov.size[3] != cv.OW) {
    return DECLINE("convolution_backward: grad_output of another shape");
  }
  if (gx && (!as_nchw(gx, spatial, &gxv) || gx->ndim != x->ndim)) return DECLINE("convolution_backward: grad_input");
  for (int32_t d = 0; gx && d < gx->ndim; d++) {
    if (gx->sizes[d] != x->sizes[d]) return DECLINE("convolution_backward: grad_input of another shape");
  }
  if (gw && !(contiguous_as(gw, w) && contiguous_as(w, w))) return DECLINE("convolution_backward: grad_weight layout");
  if (gb && (gb->ndim != 1 || gb->sizes[0] != cv.Cout)) return DECLINE("convolution_backward: grad_bias");
  operand_t goo, xo, gxo, gwo;
  if ((status = tensor_operand(device, go, &goo)) != HAL_STATUS_OK) return status;
  if ((status = tensor_operand(device, x, &xo)) != HAL_STATUS_OK) return status;
  if (gx && (status = tensor_operand(device, gx, &gxo)) != HAL_STATUS_OK) return status;
  if (gw && (status = tensor_operand(device, gw, &gwo)) != HAL_STATUS_OK) return status;
  if (gb) {
    operand_t gbo;
    if ((status = tensor_operand(device, gb, &gbo)) != HAL_STATUS_OK) return status;
  }
  if (numel(x) == 0 || numel(go) == 0) return DECLINE("convolution_backward of an empty tensor");
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;

  const int64_t ohw = cv.OH * cv.OW, Cg = cv.C / cv.G, Coutg = cv.Cout / cv.G, Kg = Cg * cv.KH * cv.KW;
  const int64_t rows = cv.C * cv.KH * cv.KW, wsize = cv.Cout * Kg;
  const int64_t nb = chunk_images(&cv, cv.Cout, wsize * 4);
  const int64_t go_at = rows * nb * ohw, part_at = go_at + cv.Cout * nb * ohw;  // Elements into the temporary.
  void* temp;
  if ((gx || gw) &&
      (status = ocl_stream_temp(stream, (uint64_t)(part_at + (nb < cv.N ? wsize : 0)) * 4, &temp)) != HAL_STATUS_OK) {
    return status;
  }
  for (int64_t n0 = 0; (gx || gw) && n0 < cv.N && status == HAL_STATUS_OK; n0 += nb) {
    const int64_t m = cv.N - n0 < nb ? cv.N - n0 : nb, mp = m * ohw;
    // The output gradient of the chunk, transposed: (Cout, m, OH, OW).
    const int64_t ts[4] = {m, cv.Cout, cv.OH, cv.OW}, tst[4] = {ohw, mp, cv.OW, 1};
    const hal_tensor_t T = view(temp, 4, ts, tst, go_at);
    const hal_tensor_t G = view(go->data, 4, ts, gov.stride, go->offset + n0 * gov.stride[0]);
    operand_t in[3] = {{0}, {0}, {0}};
    if ((status = tensor_operand(device, &G, &in[0])) != HAL_STATUS_OK) break;
    if ((status = run_elementwise(stream, q, device, &(op_t){{op->decl.name, F32}, K_COPY, EW_COPY}, &T, in, 1, 0, 0)) != HAL_STATUS_OK) break;
    const hal_tensor_t all = view(temp, 1, (int64_t[]){go_at}, (int64_t[]){1}, 0);
    operand_t col;
    if ((status = tensor_operand(device, &all, &col)) != HAL_STATUS_OK) break;
    if (gw) {  // grad_weight[g] (+)= grad_output[g] (Coutg, m * ohw) x columns[g]^T (m * ohw, Kg).
      status = im2col(stream, q, ops, op->decl.name, &xo, &xv, x->offset + n0 * xv.stride[0], &col, &cv, m);
      for (int64_t g = 0; g < cv.G && status == HAL_STATUS_OK; g++) {
        const int64_t as[2] = {Coutg, mp}, ast[2] = {mp, 1}, bs[2] = {mp, Kg}, bst[2] = {1, mp};
        const int64_t cs[2] = {Coutg, Kg}, cst[2] = {Kg, 1};
        const hal_tensor_t A = view(temp, 2, as, ast, go_at + g * Coutg * mp);
        const hal_tensor_t B = view(temp, 2, bs, bst, g * Kg * mp);
        const hal_tensor_t C = n0 == 0 ? view(gw->data, 2, cs, cst, gw->offset + g * Coutg * Kg)
                                       : view(temp, 2, cs, cst, part_at + g * Coutg * Kg);
        status = run_gemm(stream, q, device, op, &A, &B, &C);
      }
      if (n0 > 0 && status == HAL_STATUS_OK) {
        const hal_tensor_t P = view(temp, gw->ndim, gw->sizes, gw->strides, part_at);
        operand_t sum[3] = {gwo, {0}, {0}};
        if ((status = tensor_operand(device, &P, &sum[1])) == HAL_STATUS_OK) {
          status = run_elementwise(stream, q, device, &(op_t){{op->decl.name, F32}, K_BINARY, EW_ADD}, gw, sum, 2, 1.0f, 0);
        }
      }
    }
    if (gx && status == HAL_STATUS_OK) {  // columns[g] = weight[g]^T (Kg, Coutg) x grad_output[g]; col2im.
      for (int64_t g = 0; g < cv.G && status == HAL_STATUS_OK; g++) {
        const int64_t as[2] = {Kg, Coutg}, ast[2] = {1, Kg}, bs[2] = {Coutg, mp}, bst[2] = {mp, 1};
        const int64_t cs[2] = {Kg, mp}, cst[2] = {mp, 1};
        const hal_tensor_t A = view(w->data, 2, as, ast, w->offset + g * Coutg * Kg);
        const hal_tensor_t B = view(temp, 2, bs, bst, go_at + g * Coutg * mp);
        const hal_tensor_t C = view(temp, 2, cs, cst, g * Kg * mp);
        status = run_gemm(stream, q, device, op, &A, &B, &C);
      }
      if (status == HAL_STATUS_OK) {
        status = col2im(stream, q, ops, op->decl.name, &col, &gxo, &gxv, gx->offset + n0 * gxv.stride[0], &cv, m);
      }
    }
  }
  if (gb && status == HAL_STATUS_OK) {  // grad_bias = grad_output summed over (N, [H,] W).
    const int64_t dims[3] = {0, 2, 3};
    const hal_value_t sum_args[4] = {{.kind = HAL_VALUE_TENSOR, .u.tensor = *go},
                                     {.kind = HAL_VALUE_INT_LIST, .u.ints = {dims, (uint64_t)go->ndim - 1}},
                                     {.kind = HAL_VALUE_BOOL}, {.kind = HAL_VALUE_NONE}};
    status = run_reduce(stream, q, device, &(op_t){{op->decl.name, F32}, K_REDUCE, RED_SUM}, sum_args, 4, gb);
  }
  if (gx || gw) ocl_stream_temp_done(stream);
  return status;
}

// The pooling window of max_pool2d_with_indices(self, kernel_size, stride, padding, dilation, ceil_mode) and its
// backward (kernel_size at args[k]); the output's (OH, OW) come from the caller's result (the meta function
// applied ceil_mode).
static hal_status_t pool_window(const hal_value_t* args, int k, conv_t* cv) {
  int64_t kk[2], s[2], p[2], d[2];
  if (!pair(&args[k], 2, 1, NULL, kk) || !pair(&args[k + 1], 2, 1, kk, s) || !pair(&args[k + 2], 2, 0, NULL, p) ||
      !pair(&args[k + 3], 2, 1, NULL, d)) {
    return DECLINE("max_pool2d window");
  }
  cv->KH = kk[0], cv->KW = kk[1], cv->SH = s[0], cv->SW = s[1], cv->PH = p[0], cv->PW = p[1], cv->DH = d[0], cv->DW = d[1];
  if (cv->KH < 1 || cv->KW < 1 || cv->SH < 1 || cv->SW < 1 || cv->DH < 1 || cv->DW < 1) return DECLINE("max_pool2d window");
  return HAL_STATUS_OK;
}

// A 3-d (C, H, W) or 4-d tensor of |dtype| as (N, C, H, W), and its operand.
static hal_status_t planes(int32_t device, const hal_tensor_t* t, hal_dtype_t dtype, nchw_t* v, operand_t* o) {
  if (t->ndim != 3 && t->ndim != 4) return DECLINE("max_pool2d of a %d-d tensor", (int)t->ndim);
  const int lead = t->ndim == 3;
  v->size[0] = lead ? 1 : t->sizes[0];
  v->stride[0] = lead ? 0 : t->strides[0];
  for (int d = 1; d < 4; d++) v->size[d] = t->sizes[d - lead], v->stride[d] = t->strides[d - lead];
  return typed_operand(device, t, dtype, o);
}

hal_status_t run_max_pool2d(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                            const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results) {
  conv_t cv = {0};
  nchw_t xv, ov, iv;
  operand_t xo, oo, io;
  const int backward = op->code;
  // Forward: (self, kernel_size, stride, padding, dilation, ceil_mode) -> (out, indices); backward: (grad_output,
  // self, kernel_size, stride, padding, dilation, ceil_mode, indices) -> grad_input.
  const int k = backward ? 2 : 1;
  if (args[0].kind != HAL_VALUE_TENSOR || (backward && (args[1].kind != HAL_VALUE_TENSOR || args[7].kind != HAL_VALUE_TENSOR))) {
    return DECLINE("max_pool2d call");
  }
  if (num_results != (backward ? 1u : 2u)) return DECLINE("max_pool2d results");
  hal_status_t status = pool_window(args, k, &cv);
  const hal_tensor_t* x = backward ? &results[0] : &args[0].u.tensor;  // The input's plane (the gradient's).
  const hal_tensor_t* o = backward ? &args[0].u.tensor : &results[0];
  const hal_tensor_t* idx = backward ? &args[7].u.tensor : &results[1];
  if (status == HAL_STATUS_OK) status = planes(device, x, HAL_DTYPE_F32, &xv, &xo);
  if (status == HAL_STATUS_OK) status = planes(device, o, HAL_DTYPE_F32, &ov, &oo);
  if (status == HAL_STATUS_OK) status = planes(device, idx, HAL_DTYPE_I64, &iv, &io);
  if (status != HAL_STATUS_OK) return status;
  cv.N = xv.size[0], cv.C = xv.size[1], cv.H = xv.size[2], cv.W = xv.size[3], cv.OH = ov.size[2], cv.OW = ov.size[3];
  if (ov.size[0] != cv.N || ov.size[1] != cv.C || memcmp(iv.size, ov.size, sizeof(ov.size))) {
    return DECLINE("max_pool2d shapes");
  }
  if (numel(x) == 0) return ocl_ok();
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  cl_long geometry[] = {cv.C, cv.H, cv.W, cv.KH, cv.KW, cv.SH, cv.SW, cv.PH, cv.PW, cv.DH, cv.DW, cv.OH, cv.OW};
  if (backward) {  // The kernel takes the window as KH, SH, PH, DH, KW, SW, PW, DW.
    cl_long w[] = {cv.C, cv.H, cv.W, cv.KH, cv.SH, cv.PH, cv.DH, cv.KW, cv.SW, cv.PW, cv.DW, cv.OH, cv.OW};
    memcpy(geometry, w, sizeof(w));
  }
  const operand_t* order[3] = {backward ? &oo : &xo, backward ? &io : &oo, backward ? &xo : &io};
  const nchw_t* views[3] = {backward ? &ov : &xv, backward ? &iv : &ov, backward ? &xv : &iv};
  const hal_tensor_t* tensors[3] = {backward ? o : x, backward ? idx : o, backward ? x : idx};
  pthread_mutex_lock(&ops->launch);
  args_t a = {ops->kernels[backward ? KN_MAX_POOL_BW : KN_MAX_POOL], 0, CL_SUCCESS};
  for (int t = 0; t < 3; t++) {
    buffer_arg(&a, order[t]);
    cl_long v[5] = {tensors[t]->offset, views[t]->stride[0], views[t]->stride[1], views[t]->stride[2], views[t]->stride[3]};
    for (int i = 0; i < 5; i++) arg(&a, sizeof(cl_long), &v[i]);
  }
  for (int i = 0; i < 13; i++) arg(&a, sizeof(cl_long), &geometry[i]);
  const int64_t per_plane = backward ? cv.H * cv.W : cv.OH * cv.OW;
  const size_t grid[2] = {(size_t)((per_plane + ops->chunk - 1) / ops->chunk), (size_t)(cv.N * cv.C)};
  return enqueue(stream, q, ops, &a, 2, grid, NULL, op->decl.name);
}
