// The opencl plugin's operator table (op_list), the program of each device, the arguments of a launch, and
// op_launch, which maps a boxed call onto its family's launcher (ops.h). The program is built once per device,
// on the first call (pocl caches builds on disk as well).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

extern const char ocl_ops_source[];  // kernels/*.cl, embedded at build time (CMakeLists.txt)
extern const size_t ocl_ops_source_size;

// --- The operators ------------------------------------------------------------------------------------------

static const op_t g_ops[] = {
    {{"aten::add.Tensor", FLOATS}, K_BINARY, EW_ADD},
    {{"aten::add_.Tensor", FLOATS}, K_BINARY, EW_ADD},
    {{"aten::sub.Tensor", FLOATS}, K_BINARY, EW_SUB},
    {{"aten::sub_.Tensor", FLOATS}, K_BINARY, EW_SUB},
    {{"aten::mul.Tensor", FLOATS}, K_BINARY, EW_MUL},
    {{"aten::mul_.Tensor", FLOATS}, K_BINARY, EW_MUL},
    {{"aten::div.Tensor", FLOATS}, K_BINARY, EW_DIV},
    {{"aten::div_.Tensor", FLOATS}, K_BINARY, EW_DIV},
    {{"aten::add.out", FLOATS}, K_BINARY, EW_ADD},
    {{"aten::sub.out", FLOATS}, K_BINARY, EW_SUB},
    {{"aten::mul.out", FLOATS}, K_BINARY, EW_MUL},
    {{"aten::div.out", FLOATS}, K_BINARY, EW_DIV},
    {{"aten::maximum", FLOATS}, K_BINARY, EW_MAXIMUM},
    {{"aten::minimum", FLOATS}, K_BINARY, EW_MINIMUM},
    {{"aten::neg", FLOATS}, K_UNARY, EW_NEG},
    {{"aten::exp", FLOATS}, K_UNARY, EW_EXP},
    {{"aten::log", FLOATS}, K_UNARY, EW_LOG},
    {{"aten::sqrt", FLOATS}, K_UNARY, EW_SQRT},
    {{"aten::rsqrt", FLOATS}, K_UNARY, EW_RSQRT},
    {{"aten::tanh", FLOATS}, K_UNARY, EW_TANH},
    {{"aten::sigmoid", FLOATS}, K_UNARY, EW_SIGMOID},
    {{"aten::relu", FLOATS}, K_UNARY, EW_RELU},
    {{"aten::silu", FLOATS}, K_UNARY, EW_SILU},
    {{"aten::abs", FLOATS}, K_UNARY, EW_ABS},
    {{"aten::reciprocal", FLOATS}, K_UNARY, EW_RECIPROCAL},
    {{"aten::gelu", FLOATS}, K_GELU, EW_GELU},
    {{"aten::gelu_backward", FLOATS}, K_GELU_BW, EW_GELU_BW},
    {{"aten::silu_backward", FLOATS}, K_BACKWARD, EW_SILU_BW},
    {{"aten::threshold_backward", FLOATS}, K_BACKWARD, EW_THRESHOLD_BW},
    {{"aten::sigmoid_backward", FLOATS}, K_BACKWARD, EW_SIGMOID_BW},
    {{"aten::tanh_backward", FLOATS}, K_BACKWARD, EW_TANH_BW},
    {{"aten::pow.Tensor_Scalar", FLOATS}, K_POW_SCALAR, EW_POW_SCALAR},
    {{"aten::addcmul_", F32 | HALF}, K_TERNARY, EW_ADDCMUL},
    {{"aten::addcdiv_", F32 | HALF}, K_TERNARY, EW_ADDCDIV},
    {{"aten::lerp_.Scalar", F32 | HALF}, K_TERNARY, EW_LERP},
    {{"aten::fill_.Scalar", ANY_DATA | HALF | HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16)}, K_FILL, EW_FILL},
    {{"aten::copy_", ANY_DATA | HAL_DTYPE_BIT(HAL_DTYPE_F16) | HAL_DTYPE_BIT(HAL_DTYPE_BF16) |
                     HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16)}, K_COPY, EW_COPY},
    {{"aten::mm", F32}, K_MM, 0},
    {{"aten::bmm", F32}, K_BMM, 0},
    {{"aten::sum.dim_IntList", F32}, K_REDUCE, RED_SUM},
    {{"aten::mean.dim", F32}, K_REDUCE, RED_MEAN},
    {{"aten::amax", F32}, K_REDUCE, RED_AMAX},
    {{"aten::_softmax", F32}, K_SOFTMAX, 0},
    {{"aten::_log_softmax", F32}, K_SOFTMAX, 1},
    {{"aten::_softmax_backward_data", F32}, K_SOFTMAX_BW, 0},
    {{"aten::_log_softmax_backward_data", F32}, K_SOFTMAX_BW, 1},
    {{"aten::_safe_softmax", F32}, K_SOFTMAX, 2},
    {{"aten::native_layer_norm", F32}, K_LAYER_NORM, 0},
    {{"aten::native_layer_norm_backward", F32}, K_LAYER_NORM_BW, 0},
    {{"aten::index_select", F32 | I64}, K_INDEX_SELECT, 0},
    {{"aten::embedding_dense_backward", F32 | I64}, K_EMB_BW, 0},
    {{"aten::gather", ANY_DATA | HALF | HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16)}, K_GATHER, 0},
    {{"aten::scatter_add", F32 | I64}, K_SCATTER_ADD, 0},
    {{"aten::scatter_add_", F32 | I64}, K_SCATTER_ADD, 0},
    {{"aten::nll_loss_forward", F32 | I64}, K_NLL, 0},
    {{"aten::nll_loss_backward", F32 | I64}, K_NLL_BW, 0},
    {{"aten::tril", ANY_DATA | HALF | HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16)}, K_TRI, 0},
    {{"aten::triu", ANY_DATA | HALF | HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16)}, K_TRI, 1},
    {{"aten::where.self", F32 | BOOL}, K_WHERE, 0},
    {{"aten::cat", F32}, K_CAT, 0},
    {{"aten::zero_", ANY_DATA | HALF | HAL_DTYPE_BIT(HAL_DTYPE_I8) | HAL_DTYPE_BIT(HAL_DTYPE_I16)}, K_ZERO, 0},
    {{"aten::arange.start_out", F32 | I64}, K_ARANGE, 0},
    {{"aten::convolution", F32}, K_CONV, 0},
    {{"aten::convolution_backward", F32}, K_CONV_BW, 0},
    {{"aten::max_pool2d_with_indices", F32 | I64}, K_MAX_POOL, 0},
    {{"aten::max_pool2d_with_indices_backward", F32 | I64}, K_MAX_POOL, 1},
    {{"aten::_fused_adamw_", F32}, K_FUSED_ADAMW, 0},
};
#define OP_COUNT (sizeof(g_ops) / sizeof(g_ops[0]))

static hal_op_t g_decls[OP_COUNT];
static pthread_once_t g_decls_once = PTHREAD_ONCE_INIT;

static void build_decls(void) {
  for (size_t i = 0; i < OP_COUNT; i++) g_decls[i] = g_ops[i].decl;
}

int32_t ocl_op_code(const op_t* op) { return (int32_t)(op - g_ops) + 1; }

const char* ocl_op_name(int32_t code) {
  return code >= 1 && (size_t)code <= OP_COUNT ? g_ops[code - 1].decl.name : "an operator";
}

hal_status_t ocl_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ops == NULL || out_count == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: op_list: NULL output");
  pthread_once(&g_decls_once, build_decls);
  *out_ops = g_decls;
  *out_count = OP_COUNT;
  return ocl_ok();
}


// --- The program of one device -----------------------------------------------------------------------------

static const char* const g_kernel_names[KN_COUNT] = {
    "ew_f32", "ew_contig_f32", "gemm_f32", "reduce_f32", "softmax_f32", "softmax_backward_f32", "layer_norm_f32",
    "index_select_f32", "embedding_backward_f32", "nll_loss_f32", "nll_loss_backward_f32", "fill_bytes",
    "tri_bytes", "where_f32", "arange", "gemm_pack_a", "gemm_pack_b", "gemm_packed", "layer_norm_backward_f32",
    "layer_norm_backward_params_f32", "adamw_f32", "im2col_f32", "col2im_f32", "max_pool2d_f32",
    "max_pool2d_backward_f32", "cast_any", "gather_bytes", "scatter_add_f32", "ew_any"};

static pthread_mutex_t g_build_mutex = PTHREAD_MUTEX_INITIALIZER;

hal_status_t device_ops(int32_t device, ocl_ops_t** out) {
  ocl_device_t* d = &g_devices[device];
  pthread_mutex_lock(&g_build_mutex);
  hal_status_t status = HAL_STATUS_OK;
  if (d->ops == NULL) {
    ocl_ops_t* ops = calloc(1, sizeof(*ops));
    if (ops == NULL) status = ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: out of host memory");
    if (status == HAL_STATUS_OK) {
      // The packed GEMM's vectors are the device's preferred float width (4, 8 or 16 lanes; 8 where not said).
      cl_uint width = 0;
      g_cl.clGetDeviceInfo(d->id, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT, sizeof(width), &width, NULL);
      ops->vec = width == 4 || width == 16 ? (int)width : 8;
      ops->cpu = d->kind == HAL_DEVICE_KIND_CPU;
      ops->chunk = ops->cpu ? 64 : 1;  // A CPU work item loops over a run; a GPU's neighbours take neighbours.
      char options[96];
      snprintf(options, sizeof(options), "-cl-std=CL1.2 -DGEMM_VEC=%d -DEW_CHUNK=%d", ops->vec, ops->chunk);
      status = ocl_build(device, ocl_ops_source, ocl_ops_source_size, options, &ops->program);
      if (status != HAL_STATUS_OK) status = HAL_STATUS_INTERNAL;  // Our own kernels must build: a plugin bug.
    }
    for (int k = 0; status == HAL_STATUS_OK && k < KN_COUNT; k++) {
      cl_int err = CL_SUCCESS;
      ops->kernels[k] = g_cl.clCreateKernel(ops->program, g_kernel_names[k], &err);
      if (err != CL_SUCCESS) status = ocl_cl_fail(err, "clCreateKernel", g_kernel_names[k]);
    }
    if (status == HAL_STATUS_OK) {
      pthread_mutex_init(&ops->launch, NULL);
      d->ops = ops;
    } else if (ops) {
      for (int k = 0; k < KN_COUNT; k++) {
        if (ops->kernels[k]) g_cl.clReleaseKernel(ops->kernels[k]);
      }
      if (ops->program) g_cl.clReleaseProgram(ops->program);
      free(ops);
    }
  }
  *out = d->ops;
  pthread_mutex_unlock(&g_build_mutex);
  return status;
}

void ocl_ops_release(ocl_device_t* d) {
  if (d->ops == NULL) return;
  for (int k = 0; k < KN_COUNT; k++) g_cl.clReleaseKernel(d->ops->kernels[k]);
  g_cl.clReleaseProgram(d->ops->program);
  pthread_mutex_destroy(&d->ops->launch);
  free(d->ops);
  d->ops = NULL;
}


// --- Arguments -------------------------------------------------------------------------------------------------

int64_t numel(const hal_tensor_t* t) {
  int64_t n = 1;
  for (int32_t d = 0; d < t->ndim; d++) n *= t->sizes[d];
  return n;
}

size_t dtype_size(hal_dtype_t d) {
  switch (d) {  // The element types the kernels are written for; the rest are declined.
    case HAL_DTYPE_BOOL: case HAL_DTYPE_U8: case HAL_DTYPE_I8: case HAL_DTYPE_F16: case HAL_DTYPE_BF16:
    case HAL_DTYPE_I16: case HAL_DTYPE_F32: case HAL_DTYPE_I32: case HAL_DTYPE_F64: case HAL_DTYPE_I64:
      return hal_dtype_size(d);
    default: return 0;
  }
}

// Bytes of storage from |t|'s data pointer that it touches (0 when empty).
uint64_t span_bytes(const hal_tensor_t* t) {
  if (numel(t) == 0) return 0;
  uint64_t last = (uint64_t)t->offset;
  for (int32_t d = 0; d < t->ndim; d++) last += (uint64_t)(t->sizes[d] - 1) * (uint64_t)t->strides[d];
  return (last + 1) * dtype_size(t->dtype);
}

// Resolves a tensor of |dtype| (-1: any the byte kernels move) for the stream's device; an empty tensor has no
// buffer.
hal_status_t typed_operand(int32_t device, const hal_tensor_t* t, hal_dtype_t dtype, operand_t* out) {
  memset(out, 0, sizeof(*out));
  out->t = t;
  if (dtype >= 0 && t->dtype != dtype) return DECLINE("dtype %d where %d is computed", (int)t->dtype, (int)dtype);
  if (dtype < 0 && dtype_size(t->dtype) == 0) return DECLINE("dtype %d", (int)t->dtype);
  if (t->ndim > MAXD || t->ndim < 0) return DECLINE("%d dimensions (at most %d)", (int)t->ndim, MAXD);
  const uint64_t span = span_bytes(t);
  if (span == 0) return HAL_STATUS_OK;
  uint64_t off = 0;
  hal_status_t status = ocl_resolve(device, t->data, span, &out->mem, &off);
  out->byte_offset = off;
  return status;
}

hal_status_t elementwise_operand(int32_t device, const hal_value_t* v, operand_t* out) {
  if (v->kind != HAL_VALUE_TENSOR) return value_operand(device, v, out);
  const hal_tensor_t* t = &v->u.tensor;
  if (t->dtype == HAL_DTYPE_F64 && !g_devices[device].fp64) return DECLINE("f64 on a device without doubles");
  switch (t->dtype) {
    case HAL_DTYPE_F32: case HAL_DTYPE_F16: case HAL_DTYPE_BF16: case HAL_DTYPE_F64: case HAL_DTYPE_I64:
    case HAL_DTYPE_I32: case HAL_DTYPE_I16: case HAL_DTYPE_I8: case HAL_DTYPE_U8: case HAL_DTYPE_BOOL:
      return typed_operand(device, t, t->dtype, out);
    default:
      return DECLINE("an elementwise operand of dtype %d", (int)t->dtype);
  }
}

hal_status_t tensor_operand(int32_t device, const hal_tensor_t* t, operand_t* out) {
  return typed_operand(device, t, HAL_DTYPE_F32, out);
}

// A value that is a tensor, or a number standing for one (a Python number PyTorch wrapped).
hal_status_t value_operand(int32_t device, const hal_value_t* v, operand_t* out) {
  if (v->kind == HAL_VALUE_TENSOR) return tensor_operand(device, &v->u.tensor, out);
  memset(out, 0, sizeof(*out));
  if (v->kind == HAL_VALUE_FLOAT) out->scalar = (float)v->u.f;
  else if (v->kind == HAL_VALUE_INT || v->kind == HAL_VALUE_BOOL) out->scalar = (float)v->u.i;
  else return DECLINE("an operand of kind %d", (int)v->kind);
  return HAL_STATUS_OK;
}

double number(const hal_value_t* v) { return v->kind == HAL_VALUE_FLOAT ? v->u.f : (double)v->u.i; }

// |t|'s geometry against an iteration space of |ndim| dimensions of sizes |sizes| (numpy broadcasting).
void broadcast_geom(const hal_tensor_t* t, int32_t ndim, const int64_t* sizes, geom_t* g) {
  memset(g, 0, sizeof(*g));
  g->ndim = ndim;
  for (int32_t d = 0; d < ndim; d++) g->size[d] = sizes[d];
  if (t == NULL) return;
  g->offset = t->offset;
  const int32_t shift = ndim - t->ndim;
  for (int32_t d = 0; d < t->ndim; d++) g->stride[d + shift] = t->sizes[d] == 1 ? 0 : t->strides[d];
}

void own_geometry(const hal_tensor_t* t, int32_t ndim, const int64_t* sizes, geom_t* g) {
  memset(g, 0, sizeof(*g));
  g->ndim = ndim;
  g->offset = t->offset;
  for (int32_t d = 0; d < ndim; d++) g->size[d] = sizes[d], g->stride[d] = t->ndim ? t->strides[d] : 0;
}

int contiguous_as(const hal_tensor_t* t, const hal_tensor_t* like) {
  if (t->ndim != like->ndim) return 0;
  int64_t expected = 1;
  for (int32_t d = t->ndim - 1; d >= 0; d--) {
    if (t->sizes[d] != like->sizes[d]) return 0;
    if (t->sizes[d] != 1 && t->strides[d] != expected) return 0;
    expected *= t->sizes[d];
  }
  return 1;
}

void coalesce(int32_t* ndim, int64_t* sizes, int64_t (*strides)[MAXD], int count) {
  int32_t n = 0;
  for (int32_t d = 0; d < *ndim; d++) {
    if (sizes[d] == 1) continue;
    int merge = n > 0;
    for (int t = 0; t < count && merge; t++) merge = strides[t][n - 1] == strides[t][d] * sizes[d];
    if (merge) {
      sizes[n - 1] *= sizes[d];
      for (int t = 0; t < count; t++) strides[t][n - 1] = strides[t][d];
    } else {
      sizes[n] = sizes[d];
      for (int t = 0; t < count; t++) strides[t][n] = strides[t][d];
      n++;
    }
  }
  *ndim = n;
}

void arg(args_t* a, size_t size, const void* value) {
  if (a->err == CL_SUCCESS) a->err = g_cl.clSetKernelArg(a->k, a->i, size, value);
  a->i++;
}

// A buffer argument: (buffer, byte offset); an operand without a buffer passes a NULL buffer.
void buffer_arg(args_t* a, const operand_t* o) {
  cl_mem mem = o->mem;
  arg(a, sizeof(cl_mem), mem ? (const void*)&mem : NULL);
  arg(a, sizeof(cl_ulong), &o->byte_offset);
}

hal_status_t enqueue(hal_stream_t stream, cl_command_queue q, ocl_ops_t* ops, args_t* a, cl_uint dims,
                     const size_t* global, const size_t* local, const char* what) {
  cl_event ev = NULL;
  cl_int err = a->err;
  if (err == CL_SUCCESS) err = g_cl.clEnqueueNDRangeKernel(q, a->k, dims, NULL, global, local, 0, NULL, &ev);
  pthread_mutex_unlock(&ops->launch);
  if (err != CL_SUCCESS) return ocl_cl_fail(err, a->err != CL_SUCCESS ? "clSetKernelArg" : "clEnqueueNDRangeKernel", what);
  ocl_stream_track(stream, ev, what);
  g_cl.clFlush(q);
  return ocl_ok();
}



// --- op_launch ---------------------------------------------------------------------------------------------------

hal_status_t ocl_op_launch(hal_stream_t stream, uint64_t index, const hal_value_t* args, uint64_t num_args,
                    const hal_tensor_t* results, uint64_t num_results) {
  cl_command_queue q;
  int32_t device;
  hal_status_t status = ocl_stream_queue(stream, &q, &device);
  if (status != HAL_STATUS_OK) return status;
  if (index >= OP_COUNT) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: op_launch: operator %llu out of range", (unsigned long long)index);
  const op_t* op = &g_ops[index];
  const uint64_t min_results = op->kind == K_FUSED_ADAMW ? 0 : 1;  // Its schema returns nothing.
  if ((num_args && args == NULL) || num_results < min_results || (num_results && results == NULL)) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: op_launch: bad arguments or results");
  }
  if (op->kind == K_FUSED_ADAMW) return run_fused_adamw(stream, q, device, op, args, num_args);
  const hal_tensor_t* out = &results[0];
  operand_t in[3] = {{0}, {0}, {0}};
  switch (op->kind) {
    case K_UNARY:
    case K_GELU:
      if ((status = elementwise_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      if (op->kind == K_GELU && (args[1].kind != HAL_VALUE_STRING ||
                                 (strcmp(args[1].u.string, "none") && strcmp(args[1].u.string, "tanh")))) {
        return DECLINE("gelu approximate other than none / tanh");
      }
      return run_elementwise(stream, q, device, op, out, in, 1,
                             op->kind == K_GELU && strcmp(args[1].u.string, "tanh") == 0 ? 1.0f : 0.0f, 0);
    case K_BINARY:
      if ((status = elementwise_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      if ((status = elementwise_operand(device, &args[1], &in[1])) != HAL_STATUS_OK) return status;
      return run_elementwise(stream, q, device, op, out, in, 2,
                             num_args > 2 && args[2].kind != HAL_VALUE_TENSOR ? (float)number(&args[2]) : 1.0f, 0);
    case K_GELU_BW:
    case K_BACKWARD:
      if ((status = elementwise_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      if ((status = elementwise_operand(device, &args[1], &in[1])) != HAL_STATUS_OK) return status;
      if (op->kind == K_GELU_BW) {
        if (args[2].kind != HAL_VALUE_STRING || (strcmp(args[2].u.string, "none") && strcmp(args[2].u.string, "tanh"))) {
          return DECLINE("gelu_backward approximate other than none / tanh");
        }
        return run_elementwise(stream, q, device, op, out, in, 2, strcmp(args[2].u.string, "tanh") == 0 ? 1.0f : 0.0f, 0);
      }
      return run_elementwise(stream, q, device, op, out, in, 2, num_args > 2 ? (float)number(&args[2]) : 0.0f, 0);
    case K_POW_SCALAR:
      if ((status = elementwise_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      return run_elementwise(stream, q, device, op, out, in, 1, (float)number(&args[1]), 0);
    case K_TERNARY:
      for (int i = 0; i < (op->code == EW_LERP ? 2 : 3); i++) {
        if ((status = elementwise_operand(device, &args[i], &in[i])) != HAL_STATUS_OK) return status;
      }
      return run_elementwise(stream, q, device, op, out, in, op->code == EW_LERP ? 2 : 3,
                             (float)number(&args[op->code == EW_LERP ? 2 : 3]), 0);
    case K_FILL:
      if (out->dtype != HAL_DTYPE_F32) return run_fill_bytes(stream, q, device, op, &args[1], out);
      return run_elementwise(stream, q, device, op, out, in, 0, 0, (float)number(&args[1]));
    case K_LAYER_NORM:
      return run_layer_norm(stream, q, device, op, args, results, num_results);
    case K_LAYER_NORM_BW:
      return run_layer_norm_backward(stream, q, device, op, args, results, num_results);
    case K_INDEX_SELECT:
      return run_index_select(stream, q, device, op, args, out);
    case K_GATHER:
      return run_gather(stream, q, device, op, args, out);
    case K_SCATTER_ADD:
      return run_scatter_add(stream, q, device, op, args, out);
    case K_EMB_BW:
      return run_embedding_backward(stream, q, device, op, args, out);
    case K_NLL:
    case K_NLL_BW:
      return run_nll(stream, q, device, op, args, results, num_results);
    case K_TRI:
      return run_tri(stream, q, device, op, args, out);
    case K_WHERE:
      return run_where(stream, q, device, op, args, out);
    case K_CAT:
      return run_cat(stream, q, device, op, args, out);
    case K_ZERO: {
      const hal_value_t zero = {.kind = HAL_VALUE_INT};
      return run_fill_bytes(stream, q, device, op, &zero, out);
    }
    case K_ARANGE:
      return run_arange(stream, q, device, op, args, out);
    case K_CONV:
      return run_convolution(stream, q, device, op, args, out);
    case K_CONV_BW:
      return run_convolution_backward(stream, q, device, op, args, results, num_results);
    case K_MAX_POOL:
      return run_max_pool2d(stream, q, device, op, args, results, num_results);
    case K_FUSED_ADAMW:
      break;  // Launched above.
    case K_COPY:
      if (args[1].kind == HAL_VALUE_TENSOR && (args[1].u.tensor.dtype != HAL_DTYPE_F32 || out->dtype != HAL_DTYPE_F32)) {
        return run_cast(stream, q, device, op, &args[1].u.tensor, out);
      }
      if ((status = value_operand(device, &args[1], &in[0])) != HAL_STATUS_OK) return status;
      return run_elementwise(stream, q, device, op, out, in, 1, 0, 0);
    case K_MM:
    case K_BMM:
      if (args[0].kind != HAL_VALUE_TENSOR || args[1].kind != HAL_VALUE_TENSOR) return DECLINE("mm of non-tensors");
      return run_gemm(stream, q, device, op, &args[0].u.tensor, &args[1].u.tensor, out);
    case K_REDUCE:
      if (args[0].kind != HAL_VALUE_TENSOR) return DECLINE("a reduction of a number");
      return run_reduce(stream, q, device, op, args, num_args, out);
    case K_SOFTMAX:
    case K_SOFTMAX_BW:
      if (args[0].kind != HAL_VALUE_TENSOR || (op->kind == K_SOFTMAX_BW && args[1].kind != HAL_VALUE_TENSOR)) {
        return DECLINE("softmax of a number");
      }
      return run_softmax(stream, q, device, op, args, out);
  }
  return ocl_fail(HAL_STATUS_INTERNAL, "opencl: operator %s has no launcher", op->decl.name);
}

