// The opencl plugin's operators (kernel.h): the ATen operators it runs with its own OpenCL C kernels (ops.cl),
// and how a boxed call becomes a kernel launch.
//
// Each operator is a row of g_ops: its ATen name and dtypes (what op_list declares), a kind saying how its
// schema arguments map onto a kernel, and parameters of that kind (an elementwise op code, a reduction). A call
// the kernels do not cover is declined (HAL_STATUS_UNIMPLEMENTED, nothing queued): another dtype than f32,
// more than 8 dimensions, mixed dtypes. Tensors arrive as the caller has them (kernel.h): any strides, not
// broadcast; the host lays each input's geometry out against the iteration space (strides 0 where broadcast),
// so the kernels only index. The program is built once per device, on the first call (pocl caches builds on
// disk as well).
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencl.h"

extern const char ocl_ops_source[];  // ops.cl, embedded at build time (CMakeLists.txt)
extern const size_t ocl_ops_source_size;

#define MAXD 8
#define F32 HAL_DTYPE_BIT(HAL_DTYPE_F32)
#define I64 HAL_DTYPE_BIT(HAL_DTYPE_I64)
#define BOOL HAL_DTYPE_BIT(HAL_DTYPE_BOOL)
#define ANY_DATA (F32 | I64 | BOOL | HAL_DTYPE_BIT(HAL_DTYPE_I32) | HAL_DTYPE_BIT(HAL_DTYPE_U8) | HAL_DTYPE_BIT(HAL_DTYPE_F64))

typedef struct geom_t {  // ops.cl's geom_t, by value.
  int64_t size[MAXD];
  int64_t stride[MAXD];
  int64_t offset;
  int32_t ndim;
  int32_t pad;
} geom_t;

enum ew_op {  // ops.cl's EW_*
  EW_ADD, EW_SUB, EW_MUL, EW_DIV, EW_NEG, EW_EXP, EW_LOG, EW_SQRT, EW_RSQRT, EW_TANH, EW_SIGMOID, EW_RELU,
  EW_GELU, EW_SILU, EW_ABS, EW_FILL, EW_COPY, EW_GELU_BW, EW_SILU_BW, EW_THRESHOLD_BW, EW_SIGMOID_BW, EW_TANH_BW,
  EW_ADDCMUL, EW_ADDCDIV, EW_LERP, EW_MAXIMUM, EW_MINIMUM, EW_POW_SCALAR, EW_RECIPROCAL,
};
enum { RED_SUM, RED_MEAN, RED_AMAX };

typedef enum kind_e {
  K_UNARY,       // (self) -> out
  K_BINARY,      // (self, other[, alpha]) -> out; in-place variants write self
  K_TERNARY,     // addcmul / addcdiv: (self, t1, t2, value); lerp: (self, end, weight)
  K_GELU,        // (self, approximate)
  K_GELU_BW,     // (grad, self, approximate)
  K_BACKWARD,    // (grad, x or y[, threshold])
  K_POW_SCALAR,  // (self, exponent)
  K_FILL,        // (self, value)
  K_COPY,        // (self, src, non_blocking)
  K_MM,          // (self, mat2)
  K_BMM,         // (self, mat2)
  K_REDUCE,      // sum.dim_IntList / mean.dim (self, dim, keepdim, dtype); amax (self, dim, keepdim)
  K_SOFTMAX,     // (self, dim, half_to_float)
  K_SOFTMAX_BW,  // (grad_output, output, dim, input_dtype)
  K_LAYER_NORM,  // native_layer_norm (input, normalized_shape, weight?, bias?, eps) -> (out, mean, rstd)
  K_INDEX_SELECT,  // (self, dim, index): rows of a 2-d self
  K_EMB_BW,      // embedding_dense_backward (grad_output, indices, num_weights, padding_idx, scale_grad_by_freq)
  K_NLL,         // nll_loss_forward (self, target, weight?, reduction, ignore_index) -> (output, total_weight)
  K_NLL_BW,      // nll_loss_backward (grad_output, self, target, weight?, reduction, ignore_index, total_weight)
  K_TRI,         // tril / triu (self, diagonal); code 0 lower, 1 upper
  K_WHERE,       // where.self (condition, self, other)
  K_CAT,         // cat (tensors, dim): a copy of each into its slice of the result
  K_ARANGE,      // arange.start_out (start, end, step, out)
  K_ZERO,        // zero_ (self)
} kind_t;

typedef struct op_t {
  hal_op_t decl;
  kind_t kind;
  int code;  // The ew_op, the reduction, log-softmax (1) or softmax (0).
} op_t;

static const op_t g_ops[] = {
    {{"aten::add.Tensor", F32}, K_BINARY, EW_ADD},
    {{"aten::add_.Tensor", F32}, K_BINARY, EW_ADD},
    {{"aten::sub.Tensor", F32}, K_BINARY, EW_SUB},
    {{"aten::sub_.Tensor", F32}, K_BINARY, EW_SUB},
    {{"aten::mul.Tensor", F32}, K_BINARY, EW_MUL},
    {{"aten::mul_.Tensor", F32}, K_BINARY, EW_MUL},
    {{"aten::div.Tensor", F32}, K_BINARY, EW_DIV},
    {{"aten::div_.Tensor", F32}, K_BINARY, EW_DIV},
    {{"aten::maximum", F32}, K_BINARY, EW_MAXIMUM},
    {{"aten::minimum", F32}, K_BINARY, EW_MINIMUM},
    {{"aten::neg", F32}, K_UNARY, EW_NEG},
    {{"aten::exp", F32}, K_UNARY, EW_EXP},
    {{"aten::log", F32}, K_UNARY, EW_LOG},
    {{"aten::sqrt", F32}, K_UNARY, EW_SQRT},
    {{"aten::rsqrt", F32}, K_UNARY, EW_RSQRT},
    {{"aten::tanh", F32}, K_UNARY, EW_TANH},
    {{"aten::sigmoid", F32}, K_UNARY, EW_SIGMOID},
    {{"aten::relu", F32}, K_UNARY, EW_RELU},
    {{"aten::silu", F32}, K_UNARY, EW_SILU},
    {{"aten::abs", F32}, K_UNARY, EW_ABS},
    {{"aten::reciprocal", F32}, K_UNARY, EW_RECIPROCAL},
    {{"aten::gelu", F32}, K_GELU, EW_GELU},
    {{"aten::gelu_backward", F32}, K_GELU_BW, EW_GELU_BW},
    {{"aten::silu_backward", F32}, K_BACKWARD, EW_SILU_BW},
    {{"aten::threshold_backward", F32}, K_BACKWARD, EW_THRESHOLD_BW},
    {{"aten::sigmoid_backward", F32}, K_BACKWARD, EW_SIGMOID_BW},
    {{"aten::tanh_backward", F32}, K_BACKWARD, EW_TANH_BW},
    {{"aten::pow.Tensor_Scalar", F32}, K_POW_SCALAR, EW_POW_SCALAR},
    {{"aten::addcmul_", F32}, K_TERNARY, EW_ADDCMUL},
    {{"aten::addcdiv_", F32}, K_TERNARY, EW_ADDCDIV},
    {{"aten::lerp_.Scalar", F32}, K_TERNARY, EW_LERP},
    {{"aten::fill_.Scalar", ANY_DATA}, K_FILL, EW_FILL},
    {{"aten::copy_", F32}, K_COPY, EW_COPY},
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
    {{"aten::index_select", F32 | I64}, K_INDEX_SELECT, 0},
    {{"aten::embedding_dense_backward", F32 | I64}, K_EMB_BW, 0},
    {{"aten::nll_loss_forward", F32 | I64}, K_NLL, 0},
    {{"aten::nll_loss_backward", F32 | I64}, K_NLL_BW, 0},
    {{"aten::tril", ANY_DATA}, K_TRI, 0},
    {{"aten::triu", ANY_DATA}, K_TRI, 1},
    {{"aten::where.self", F32 | BOOL}, K_WHERE, 0},
    {{"aten::cat", F32}, K_CAT, 0},
    {{"aten::zero_", ANY_DATA}, K_ZERO, 0},
    {{"aten::arange.start_out", F32 | I64}, K_ARANGE, 0},
};
#define OP_COUNT (sizeof(g_ops) / sizeof(g_ops[0]))

static hal_op_t g_decls[OP_COUNT];
static pthread_once_t g_decls_once = PTHREAD_ONCE_INIT;

static void build_decls(void) {
  for (size_t i = 0; i < OP_COUNT; i++) g_decls[i] = g_ops[i].decl;
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

enum {
  KN_EW, KN_EW_CONTIG, KN_GEMM, KN_REDUCE, KN_SOFTMAX, KN_SOFTMAX_BW, KN_LAYER_NORM, KN_INDEX_SELECT, KN_EMB_BW,
  KN_NLL, KN_NLL_BW, KN_FILL, KN_TRI, KN_WHERE, KN_ARANGE, KN_COUNT
};
static const char* const g_kernel_names[KN_COUNT] = {
    "ew_f32", "ew_contig_f32", "gemm_f32", "reduce_f32", "softmax_f32", "softmax_backward_f32", "layer_norm_f32",
    "index_select_f32", "embedding_backward_f32", "nll_loss_f32", "nll_loss_backward_f32", "fill_bytes",
    "tri_bytes", "where_f32", "arange"};

struct ocl_ops_t {
  cl_program program;
  cl_kernel kernels[KN_COUNT];
  pthread_mutex_t launch;  // clSetKernelArg + enqueue of the device's kernels are one step.
};

static pthread_mutex_t g_build_mutex = PTHREAD_MUTEX_INITIALIZER;

static hal_status_t device_ops(int32_t device, ocl_ops_t** out) {
  ocl_device_t* d = &g_devices[device];
  pthread_mutex_lock(&g_build_mutex);
  hal_status_t status = HAL_STATUS_OK;
  if (d->ops == NULL) {
    ocl_ops_t* ops = calloc(1, sizeof(*ops));
    if (ops == NULL) status = ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: out of host memory");
    if (status == HAL_STATUS_OK) {
      status = ocl_build(device, ocl_ops_source, ocl_ops_source_size, "-cl-std=CL1.2", &ops->program);
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

#define DECLINE(...) ocl_fail(HAL_STATUS_UNIMPLEMENTED, "opencl: " __VA_ARGS__)

// A tensor as a kernel sees it: its buffer, the byte offset of its storage, its geometry.
typedef struct operand_t {
  cl_mem mem;
  cl_ulong byte_offset;
  const hal_tensor_t* t;  // NULL: a scalar (or an unused operand)
  float scalar;
} operand_t;

static int64_t numel(const hal_tensor_t* t) {
  int64_t n = 1;
  for (int32_t d = 0; d < t->ndim; d++) n *= t->sizes[d];
  return n;
}

static size_t dtype_size(hal_dtype_t d) {
  switch (d) {
    case HAL_DTYPE_BOOL: case HAL_DTYPE_U8: case HAL_DTYPE_I8: return 1;
    case HAL_DTYPE_F16: case HAL_DTYPE_BF16: case HAL_DTYPE_I16: return 2;
    case HAL_DTYPE_F32: case HAL_DTYPE_I32: return 4;
    case HAL_DTYPE_F64: case HAL_DTYPE_I64: return 8;
    default: return 0;
  }
}

// Bytes of storage from |t|'s data pointer that it touches (0 when empty).
static uint64_t span_bytes(const hal_tensor_t* t) {
  if (numel(t) == 0) return 0;
  uint64_t last = (uint64_t)t->offset;
  for (int32_t d = 0; d < t->ndim; d++) last += (uint64_t)(t->sizes[d] - 1) * (uint64_t)t->strides[d];
  return (last + 1) * dtype_size(t->dtype);
}

// Resolves a tensor of |dtype| (-1: any the byte kernels move) for the stream's device; an empty tensor has no
// buffer.
static hal_status_t typed_operand(int32_t device, const hal_tensor_t* t, hal_dtype_t dtype, operand_t* out) {
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

static hal_status_t tensor_operand(int32_t device, const hal_tensor_t* t, operand_t* out) {
  return typed_operand(device, t, HAL_DTYPE_F32, out);
}

// A value that is a tensor, or a number standing for one (a Python number PyTorch wrapped).
static hal_status_t value_operand(int32_t device, const hal_value_t* v, operand_t* out) {
  if (v->kind == HAL_VALUE_TENSOR) return tensor_operand(device, &v->u.tensor, out);
  memset(out, 0, sizeof(*out));
  if (v->kind == HAL_VALUE_FLOAT) out->scalar = (float)v->u.f;
  else if (v->kind == HAL_VALUE_INT || v->kind == HAL_VALUE_BOOL) out->scalar = (float)v->u.i;
  else return DECLINE("an operand of kind %d", (int)v->kind);
  return HAL_STATUS_OK;
}

static double number(const hal_value_t* v) { return v->kind == HAL_VALUE_FLOAT ? v->u.f : (double)v->u.i; }

// |t|'s geometry against an iteration space of |ndim| dimensions of sizes |sizes| (numpy broadcasting).
static void broadcast_geom(const hal_tensor_t* t, int32_t ndim, const int64_t* sizes, geom_t* g) {
  memset(g, 0, sizeof(*g));
  g->ndim = ndim;
  for (int32_t d = 0; d < ndim; d++) g->size[d] = sizes[d];
  if (t == NULL) return;
  g->offset = t->offset;
  const int32_t shift = ndim - t->ndim;
  for (int32_t d = 0; d < t->ndim; d++) g->stride[d + shift] = t->sizes[d] == 1 ? 0 : t->strides[d];
}

static int contiguous_as(const hal_tensor_t* t, const hal_tensor_t* like) {
  if (t->ndim != like->ndim) return 0;
  int64_t expected = 1;
  for (int32_t d = t->ndim - 1; d >= 0; d--) {
    if (t->sizes[d] != like->sizes[d]) return 0;
    if (t->sizes[d] != 1 && t->strides[d] != expected) return 0;
    expected *= t->sizes[d];
  }
  return 1;
}

// Kernel arguments, set in order.
typedef struct args_t {
  cl_kernel k;
  cl_uint i;
  cl_int err;
} args_t;

static void arg(args_t* a, size_t size, const void* value) {
  if (a->err == CL_SUCCESS) a->err = g_cl.clSetKernelArg(a->k, a->i, size, value);
  a->i++;
}

// A buffer argument: (buffer, byte offset); an operand without a buffer passes a NULL buffer.
static void buffer_arg(args_t* a, const operand_t* o) {
  cl_mem mem = o->mem;
  arg(a, sizeof(cl_mem), mem ? (const void*)&mem : NULL);
  arg(a, sizeof(cl_ulong), &o->byte_offset);
}

static hal_status_t enqueue(hal_stream_t stream, cl_command_queue q, ocl_ops_t* ops, args_t* a, cl_uint dims,
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

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// --- Elementwise ------------------------------------------------------------------------------------------------

static hal_status_t run_elementwise(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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

// --- GEMM --------------------------------------------------------------------------------------------------------

#define TS 32
#define RTS 8

static hal_status_t run_gemm(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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

// --- Reductions and softmax -------------------------------------------------------------------------------------

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

static hal_status_t run_reduce(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
  const size_t local = 64, global = round_up((size_t)kept, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
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

static hal_status_t run_softmax(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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

// --- Layer norm, gathers, losses, data movement ----------------------------------------------------------------

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

static hal_status_t run_layer_norm(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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

static hal_status_t run_index_select(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
  broadcast_geom(out, out->ndim, out->sizes, &og);
  for (int32_t d = 0; d < out->ndim; d++) og.stride[d] = out->strides[d];
  broadcast_geom(w, w->ndim, out->sizes, &wg);
  for (int32_t d = 0; d < w->ndim; d++) wg.stride[d] = w->strides[d];
  cl_long is0 = idx->ndim ? idx->strides[0] : 0, ie = idx->offset, rows = w->sizes[dim], cn = n;
  cl_int cd = (cl_int)dim;
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
  const size_t local = 64, global = round_up((size_t)n, local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

static hal_status_t run_embedding_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
  const size_t local = 64, global = round_up((size_t)(rows * cols), local);
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

static hal_status_t run_nll(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
  cl_int hw = w != NULL, reduction = (cl_int)ar->u.i;
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
  const size_t local = backward ? 64 : 1;
  const size_t global = backward ? round_up((size_t)(n * classes), 64) : 1;
  return enqueue(stream, q, ops, &a, 1, &global, &local, op->decl.name);
}

// fill_ of any dtype: the value as the element's bytes.
static hal_status_t run_fill_bytes(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
    default: return DECLINE("fill_ of dtype %d", (int)out->dtype);
  }
  ocl_ops_t* ops;
  if ((status = device_ops(device, &ops)) != HAL_STATUS_OK) return status;
  geom_t g;
  broadcast_geom(out, out->ndim, out->sizes, &g);
  for (int32_t d = 0; d < out->ndim; d++) g.stride[d] = out->strides[d];
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

static hal_status_t run_tri(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
  broadcast_geom(out, out->ndim, out->sizes, &og);
  for (int32_t d = 0; d < out->ndim; d++) og.stride[d] = out->strides[d];
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

static hal_status_t run_where(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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
  broadcast_geom(out, out->ndim, out->sizes, &og);
  for (int32_t d = 0; d < out->ndim; d++) og.stride[d] = out->strides[d];
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

static hal_status_t run_cat(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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

static hal_status_t run_arange(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
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

// --- op_launch ---------------------------------------------------------------------------------------------------

static hal_status_t check_tensors(const hal_value_t* args, uint64_t num_args, const hal_tensor_t* results,
                                  uint64_t num_results) {
  (void)results;
  (void)num_results;
  return HAL_STATUS_OK;
}

hal_status_t ocl_op_launch(hal_stream_t stream, uint64_t index, const hal_value_t* args, uint64_t num_args,
                           const hal_tensor_t* results, uint64_t num_results) {
  cl_command_queue q;
  int32_t device;
  hal_status_t status = ocl_stream_queue(stream, &q, &device);
  if (status != HAL_STATUS_OK) return status;
  if (index >= OP_COUNT) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: op_launch: operator %llu out of range", (unsigned long long)index);
  if ((num_args && args == NULL) || num_results < 1 || results == NULL) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: op_launch: bad arguments or results");
  }
  if ((status = check_tensors(args, num_args, results, num_results)) != HAL_STATUS_OK) return status;
  const op_t* op = &g_ops[index];
  const hal_tensor_t* out = &results[0];
  operand_t in[3] = {{0}, {0}, {0}};
  switch (op->kind) {
    case K_UNARY:
    case K_GELU:
      if ((status = value_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      if (op->kind == K_GELU && (args[1].kind != HAL_VALUE_STRING ||
                                 (strcmp(args[1].u.string, "none") && strcmp(args[1].u.string, "tanh")))) {
        return DECLINE("gelu approximate other than none / tanh");
      }
      return run_elementwise(stream, q, device, op, out, in, 1,
                             op->kind == K_GELU && strcmp(args[1].u.string, "tanh") == 0 ? 1.0f : 0.0f, 0);
    case K_BINARY:
      if ((status = value_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      if ((status = value_operand(device, &args[1], &in[1])) != HAL_STATUS_OK) return status;
      return run_elementwise(stream, q, device, op, out, in, 2, num_args > 2 ? (float)number(&args[2]) : 1.0f, 0);
    case K_GELU_BW:
    case K_BACKWARD:
      if ((status = value_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      if ((status = value_operand(device, &args[1], &in[1])) != HAL_STATUS_OK) return status;
      if (op->kind == K_GELU_BW) {
        if (args[2].kind != HAL_VALUE_STRING || (strcmp(args[2].u.string, "none") && strcmp(args[2].u.string, "tanh"))) {
          return DECLINE("gelu_backward approximate other than none / tanh");
        }
        return run_elementwise(stream, q, device, op, out, in, 2, strcmp(args[2].u.string, "tanh") == 0 ? 1.0f : 0.0f, 0);
      }
      return run_elementwise(stream, q, device, op, out, in, 2, num_args > 2 ? (float)number(&args[2]) : 0.0f, 0);
    case K_POW_SCALAR:
      if ((status = value_operand(device, &args[0], &in[0])) != HAL_STATUS_OK) return status;
      return run_elementwise(stream, q, device, op, out, in, 1, (float)number(&args[1]), 0);
    case K_TERNARY:
      for (int i = 0; i < (op->code == EW_LERP ? 2 : 3); i++) {
        if ((status = value_operand(device, &args[i], &in[i])) != HAL_STATUS_OK) return status;
      }
      return run_elementwise(stream, q, device, op, out, in, op->code == EW_LERP ? 2 : 3,
                             (float)number(&args[op->code == EW_LERP ? 2 : 3]), 0);
    case K_FILL:
      if (out->dtype != HAL_DTYPE_F32) return run_fill_bytes(stream, q, device, op, &args[1], out);
      return run_elementwise(stream, q, device, op, out, in, 0, 0, (float)number(&args[1]));
    case K_LAYER_NORM:
      return run_layer_norm(stream, q, device, op, args, results, num_results);
    case K_INDEX_SELECT:
      return run_index_select(stream, q, device, op, args, out);
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
    case K_COPY:
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
