// emu's operators (kernel.h): the kernels the emulated device runs itself, on its stream, paced at its speed.
//
// This is the sample of how a plugin adds kernels. Each operator is one sw_operator_t: its ATen name and
// dtypes (what op_list says), an optional check run when the call is queued (decline what the kernel does not
// cover: HAL_STATUS_UNIMPLEMENTED, and the op then runs another way), and the kernel, run on the stream's
// worker over host pointers (devices/common/sw_ops.c resolves and paces). Arguments come in the ATen schema's
// order; results were allocated by the caller with the shapes the op's meta function gives. Inputs are not
// broadcast for the kernel: it broadcasts from their sizes, honours every stride and offset, and handles
// empty tensors.
//
// Covered: elementwise add / sub / mul / div (.Tensor, with add's and sub's alpha, and a Python number in
// place of `other`), neg, exp, tanh, relu, fill_, copy_ (strided and broadcast, one dtype), and mm; f32 and
// f64, one dtype per call.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hal/hal.h"
#include "sw_stream.h"

#define MAX_DIMS 16
#define FLOATS (HAL_DTYPE_BIT(HAL_DTYPE_F32) | HAL_DTYPE_BIT(HAL_DTYPE_F64))

#define DECLINE(...) sw_plugin.fail(HAL_STATUS_UNIMPLEMENTED, "emu: " __VA_ARGS__)

// --- Elementwise: an operand broadcast to the result's shape -------------------------------------------------

typedef struct operand_t {
  char* base;                // Host address of element 0 (data + offset).
  int64_t strides[MAX_DIMS];  // In elements, against the result's dimensions (0 where broadcast).
} operand_t;

// A tensor value, or a scalar (a Python number) held in |scalar| with stride 0 everywhere.
static void operand(const hal_value_t* v, const hal_tensor_t* result, hal_dtype_t dtype, operand_t* out,
                    double* scalar_f64, float* scalar_f32) {
  memset(out, 0, sizeof(*out));
  if (v->kind != HAL_VALUE_TENSOR) {
    double x = v->kind == HAL_VALUE_FLOAT ? v->u.f : (double)v->u.i;
    *scalar_f64 = x;
    *scalar_f32 = (float)x;
    out->base = dtype == HAL_DTYPE_F64 ? (char*)scalar_f64 : (char*)scalar_f32;
    return;
  }
  const hal_tensor_t* t = &v->u.tensor;
  out->base = (char*)t->data + t->offset * (int64_t)hal_dtype_size(t->dtype);
  const int32_t shift = result->ndim - t->ndim;
  for (int32_t d = 0; d < t->ndim; d++) {
    out->strides[d + shift] = t->sizes[d] == 1 ? 0 : t->strides[d];
  }
}

typedef enum { EW_ADD, EW_SUB, EW_MUL, EW_DIV, EW_NEG, EW_EXP, EW_TANH, EW_RELU, EW_FILL } ew_kind_t;

#define EW_EXPR(T, kind, x, y, alpha)                                                        \
  ((kind) == EW_ADD    ? (T)((x) + (alpha) * (y))                                            \
   : (kind) == EW_SUB  ? (T)((x) - (alpha) * (y))                                            \
   : (kind) == EW_MUL  ? (T)((x) * (y))                                                      \
   : (kind) == EW_DIV  ? (T)((x) / (y))                                                      \
   : (kind) == EW_NEG  ? (T)(-(x))                                                           \
   : (kind) == EW_EXP  ? (T)(sizeof(T) == 8 ? exp((double)(x)) : expf((float)(x)))           \
   : (kind) == EW_TANH ? (T)(sizeof(T) == 8 ? tanh((double)(x)) : tanhf((float)(x)))         \
   : (kind) == EW_RELU ? (T)((x) > 0 ? (x) : ((x) != (x) ? (x) : 0))                         \
                       : (T)(y))

// out = f(a, b) over the result's shape: the innermost dimension is a tight loop, the others a counter.
#define EW_LOOP(T)                                                                                         \
  static void ew_loop_##T(ew_kind_t kind, const hal_tensor_t* r, const operand_t* a, const operand_t* b,   \
                          T alpha) {                                                                     \
    int64_t n = 1;                                                                                         \
    for (int32_t d = 0; d < r->ndim; d++) n *= r->sizes[d];                                                \
    if (n == 0) return;                                                                                    \
    const int32_t nd = r->ndim;                                                                            \
    const int64_t inner = nd ? r->sizes[nd - 1] : 1;                                                       \
    const int64_t so = nd ? r->strides[nd - 1] : 0, sa = nd ? a->strides[nd - 1] : 0,                     \
                  sb = nd ? b->strides[nd - 1] : 0;                                                        \
    int64_t index[MAX_DIMS] = {0};                                                                         \
    T* out0 = (T*)r->data + r->offset;                                                                     \
    for (int64_t done = 0; done < n; done += inner) {                                                      \
      int64_t oo = 0, oa = 0, ob = 0;                                                                      \
      for (int32_t d = 0; d + 1 < nd; d++) {                                                               \
        oo += index[d] * r->strides[d];                                                                    \
        oa += index[d] * a->strides[d];                                                                    \
        ob += index[d] * b->strides[d];                                                                    \
      }                                                                                                    \
      T* o = out0 + oo;                                                                                    \
      const T* x = (const T*)a->base + oa;                                                                 \
      const T* y = (const T*)b->base + ob;                                                                 \
      for (int64_t i = 0; i < inner; i++) o[i * so] = EW_EXPR(T, kind, x[i * sa], y[i * sb], alpha);       \
      for (int32_t d = nd - 2; d >= 0; d--) {                                                              \
        if (++index[d] < r->sizes[d]) break;                                                               \
        index[d] = 0;                                                                                      \
      }                                                                                                    \
    }                                                                                                      \
  }
EW_LOOP(float)
EW_LOOP(double)

// The one dtype of a call's tensors (arguments and results), or -1 when they differ or there is none.
static hal_dtype_t call_dtype(const sw_call_t* call) {
  hal_dtype_t dtype = -1;
  for (uint64_t i = 0; i < call->num_args + call->num_results; i++) {
    const hal_tensor_t* t = i < call->num_args ? (call->args[i].kind == HAL_VALUE_TENSOR ? &call->args[i].u.tensor : NULL)
                                               : &call->results[i - call->num_args];
    if (t == NULL) continue;
    if (dtype >= 0 && t->dtype != dtype) return -2;
    dtype = t->dtype;
  }
  return dtype;
}

static hal_status_t check_elementwise(const sw_call_t* call) {
  const hal_dtype_t dtype = call_dtype(call);
  if (dtype == -2) return DECLINE("mixed dtypes (emu's kernels take one dtype per call)");
  if (dtype != HAL_DTYPE_F32 && dtype != HAL_DTYPE_F64) return DECLINE("dtype %d (emu computes f32 and f64)", dtype);
  if (call->num_results != 1 || call->results[0].ndim > MAX_DIMS) return DECLINE("more than %d dimensions", MAX_DIMS);
  for (uint64_t i = 0; i < call->num_args; i++) {
    const hal_value_t* v = &call->args[i];
    if (v->kind == HAL_VALUE_TENSOR && v->u.tensor.ndim > call->results[0].ndim) {
      return DECLINE("an argument has more dimensions than the result");
    }
  }
  return HAL_STATUS_OK;
}

static double number(const hal_value_t* v) { return v->kind == HAL_VALUE_FLOAT ? v->u.f : (double)v->u.i; }

static hal_status_t run_elementwise(const sw_call_t* call, ew_kind_t kind) {
  const hal_tensor_t* r = &call->results[0];
  const hal_value_t none = {.kind = HAL_VALUE_INT};
  // Binary ops: (self, other[, alpha]); unary: (self); fill_: (self, value) with the result being self.
  const hal_value_t* x = kind == EW_FILL ? &none : &call->args[0];
  const hal_value_t* y = kind == EW_FILL ? &call->args[1] : call->num_args > 1 ? &call->args[1] : &none;
  const double alpha = (kind == EW_ADD || kind == EW_SUB) && call->num_args > 2 ? number(&call->args[2]) : 1.0;
  operand_t a, b;
  double xf64, yf64;
  float xf32, yf32;
  operand(x, r, r->dtype, &a, &xf64, &xf32);
  operand(y, r, r->dtype, &b, &yf64, &yf32);
  if (r->dtype == HAL_DTYPE_F64) ew_loop_double(kind, r, &a, &b, alpha);
  else ew_loop_float(kind, r, &a, &b, (float)alpha);
  return HAL_STATUS_OK;
}

#define ELEMENTWISE(name, kind) \
  static hal_status_t run_##name(const sw_call_t* call) { return run_elementwise(call, kind); }
ELEMENTWISE(add, EW_ADD)
ELEMENTWISE(sub, EW_SUB)
ELEMENTWISE(mul, EW_MUL)
ELEMENTWISE(div, EW_DIV)
ELEMENTWISE(neg, EW_NEG)
ELEMENTWISE(exp, EW_EXP)
ELEMENTWISE(tanh, EW_TANH)
ELEMENTWISE(relu, EW_RELU)
ELEMENTWISE(fill, EW_FILL)

// --- mm: (n x k) @ (k x m), any strides --------------------------------------------------------------------

static hal_status_t check_mm(const sw_call_t* call) {
  const hal_dtype_t dtype = call_dtype(call);
  if (dtype == -2) return DECLINE("mixed dtypes (emu's kernels take one dtype per call)");
  if (dtype != HAL_DTYPE_F32 && dtype != HAL_DTYPE_F64) return DECLINE("dtype %d (emu computes f32 and f64)", dtype);
  if (call->args[0].kind != HAL_VALUE_TENSOR || call->args[1].kind != HAL_VALUE_TENSOR) {
    return DECLINE("mm takes two tensors");
  }
  return HAL_STATUS_OK;
}

#define MM_LOOP(T)                                                                                          \
  static void mm_##T(const hal_tensor_t* a, const hal_tensor_t* b, const hal_tensor_t* r) {                 \
    const int64_t n = a->sizes[0], k = a->sizes[1], m = b->sizes[1];                                       \
    const T* A = (const T*)a->data + a->offset;                                                            \
    const T* B = (const T*)b->data + b->offset;                                                            \
    T* R = (T*)r->data + r->offset;                                                                        \
    for (int64_t i = 0; i < n; i++) {                                                                      \
      T* row = R + i * r->strides[0];                                                                      \
      for (int64_t j = 0; j < m; j++) row[j * r->strides[1]] = 0;                                          \
      for (int64_t p = 0; p < k; p++) {                                                                    \
        const T aip = A[i * a->strides[0] + p * a->strides[1]];                                            \
        const T* brow = B + p * b->strides[0];                                                             \
        for (int64_t j = 0; j < m; j++) row[j * r->strides[1]] += aip * brow[j * b->strides[1]];          \
      }                                                                                                    \
    }                                                                                                      \
  }
MM_LOOP(float)
MM_LOOP(double)

static hal_status_t run_mm(const sw_call_t* call) {
  const hal_tensor_t *a = &call->args[0].u.tensor, *b = &call->args[1].u.tensor, *r = &call->results[0];
  if (r->sizes[0] == 0 || r->sizes[1] == 0) return HAL_STATUS_OK;
  if (r->dtype == HAL_DTYPE_F64) mm_double(a, b, r);
  else mm_float(a, b, r);
  return HAL_STATUS_OK;
}

// --- The table -----------------------------------------------------------------------------------------------

const sw_operator_t emu_operators[] = {
    {{"aten::add.Tensor", FLOATS}, check_elementwise, run_add},
    {{"aten::sub.Tensor", FLOATS}, check_elementwise, run_sub},
    {{"aten::mul.Tensor", FLOATS}, check_elementwise, run_mul},
    {{"aten::div.Tensor", FLOATS}, check_elementwise, run_div},
    {{"aten::neg", FLOATS}, check_elementwise, run_neg},
    {{"aten::exp", FLOATS}, check_elementwise, run_exp},
    {{"aten::tanh", FLOATS}, check_elementwise, run_tanh},
    {{"aten::relu", FLOATS}, check_elementwise, run_relu},
    {{"aten::fill_.Scalar", FLOATS}, check_elementwise, run_fill},
    {{"aten::copy_", FLOATS}, check_elementwise, run_fill},  // (self, src, non_blocking): self = src, broadcast
    {{"aten::mm", FLOATS}, check_mm, run_mm},
    {{NULL, 0}, NULL, NULL},
};
