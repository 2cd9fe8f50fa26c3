// cuda: the operators (kernel.h's op_list / op_launch) through cuBLAS, loaded at run time on first use
// (libcublas.so.12, else .11, or $HAL_CUBLAS_LIBRARY). Without cuBLAS, op_list declares no operators and every
// operator runs another way (decompositions, the CPU).
//
// Declared: aten::mm and aten::bmm in f32. ATen tensors are row-major views with any strides; cuBLAS is
// column-major. A row-major r x c matrix X whose column stride is 1 is, read column-major, X^T with leading
// dimension = its row stride; one whose row stride is 1 is X itself, column-major, with leading dimension = its
// column stride. So C = A B (row-major) is computed as C^T = B^T A^T (column-major) with each operand
// transposed or not by its strides: transposed views need no copy. A layout cuBLAS cannot express (neither
// stride 1, a broadcast, a result whose columns are not contiguous) is declined (UNIMPLEMENTED), as are other
// dtypes. cuBLAS's default math mode is used (no TF32 unless the environment asks cuBLAS for it:
// NVIDIA_TF32_OVERRIDE), so results are full FP32.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_plugin.h"

static hal_cublas_api_t g_blas;
static int g_blas_loaded;
static char g_blas_why[512];  // Why cuBLAS is not there (HAL_CUDA_DEBUG prints it).
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;

static void load_cublas(void) {
  const char* path = getenv("HAL_CUBLAS_LIBRARY");
  const int given = path && *path;
  const char* candidates[] = {given ? path : "libcublas.so.12", given ? NULL : "libcublas.so.11",
                              given ? NULL : "libcublas.so"};
  void* library = NULL;
  const char* loaded = candidates[0];
  for (size_t i = 0; i < 3 && library == NULL && candidates[i]; i++) {
    library = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (library) loaded = candidates[i];
  }
  if (library == NULL) {
    snprintf(g_blas_why, sizeof(g_blas_why), "%s not found: no operators", candidates[0]);
  } else {
    g_blas_loaded = 1;
#define LOAD(ret, member, symbol, args)                                                                          \
  g_blas.member = (ret(*) args)dlsym(library, #symbol);                                                         \
  if (g_blas.member == NULL && g_blas_loaded) {                                                                 \
    snprintf(g_blas_why, sizeof(g_blas_why), "%s lacks the entry point %s: no operators", loaded, #symbol);      \
    g_blas_loaded = 0;                                                                                          \
  }
    HAL_CUBLAS_FUNCTIONS(LOAD)
#undef LOAD
  }
  const char* debug = getenv("HAL_CUDA_DEBUG");
  if (!g_blas_loaded && debug && *debug && strcmp(debug, "0") != 0) fprintf(stderr, "hal cuda: %s\n", g_blas_why);
}

enum { OP_MM, OP_BMM };
static const hal_op_t g_ops[] = {
    {"aten::mm", HAL_DTYPE_BIT(HAL_DTYPE_F32)},
    {"aten::bmm", HAL_DTYPE_BIT(HAL_DTYPE_F32)},
};

hal_status_t cu_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
  hal_status_t status = cu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ops == NULL || out_count == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: op_list: NULL output");
  pthread_once(&g_blas_once, load_cublas);
  *out_ops = g_ops;
  *out_count = g_blas_loaded ? sizeof(g_ops) / sizeof(g_ops[0]) : 0;
  return cu_ok();
}

void cu_ops_release(cu_device_t* d) {
  if (d->blas && g_blas_loaded) g_blas.cublasDestroy(d->blas);
  d->blas = NULL;
}

static const char* blas_name(cublasStatus_t s) {
  switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_<unknown>";
  }
}

static hal_status_t blas_fail(cublasStatus_t s, const char* call, const char* op) {
  hal_status_t status = s == 3 ? HAL_STATUS_OUT_OF_MEMORY
                        : s == 7 ? HAL_STATUS_INVALID_ARGUMENT
                        : s == 15 ? HAL_STATUS_UNIMPLEMENTED : HAL_STATUS_DEVICE_ERROR;
  cu_fail(status, "cuda: %s: %s (%d) in %s", call, blas_name(s), (int)s, op);
  cu_set_native(s);
  return status;
}

// The column-major operand that stands for X^T, X a row-major r x c matrix with strides (s0, s1): 1 and its
// transposition and leading dimension, or 0 when cuBLAS cannot read it in place.
static int operand(int64_t r, int64_t c, int64_t s0, int64_t s1, cublasOperation_t* op, int64_t* ld) {
  const int64_t rr = r > 1 ? r : 1, cc = c > 1 ? c : 1;
  if (s1 == 1 || c <= 1) {  // Rows contiguous: X^T is column-major with ld = the row stride.
    const int64_t l = r <= 1 ? cc : s0;
    if (l >= cc && l <= INT_MAX) return *op = CUBLAS_OP_N, *ld = l, 1;
  }
  if (s0 == 1 || r <= 1) {  // Columns contiguous: X is column-major with ld = the column stride; transpose it.
    const int64_t l = c <= 1 ? rr : s1;
    if (l >= rr && l <= INT_MAX) return *op = CUBLAS_OP_T, *ld = l, 1;
  }
  return 0;
}

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

#define DECLINE(...) return cu_fail(HAL_STATUS_UNIMPLEMENTED, "cuda: " __VA_ARGS__)

hal_status_t cu_op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                          const hal_tensor_t* results, uint64_t num_results) {
  CUstream cs;
  int32_t device;
  hal_status_t status = cu_stream_get(stream, &cs, &device);  // Binds the device's context.
  if (status != HAL_STATUS_OK) return status;
  pthread_once(&g_blas_once, load_cublas);
  if (!g_blas_loaded || op >= sizeof(g_ops) / sizeof(g_ops[0])) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: op_launch: no operator %llu (%s)", (unsigned long long)op,
                   g_blas_loaded ? "out of range" : g_blas_why);
  }
  const char* name = g_ops[op].name;
  const int batched = op == OP_BMM;
  const int ndim = batched ? 3 : 2;
  if (num_args != 2 || num_results != 1 || args == NULL || results == NULL || args[0].kind != HAL_VALUE_TENSOR ||
      args[1].kind != HAL_VALUE_TENSOR) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: %s takes two tensors and gives one", name);
  }
  const hal_tensor_t* a = &args[0].u.tensor;
  const hal_tensor_t* b = &args[1].u.tensor;
  const hal_tensor_t* c = &results[0];
  if (a->ndim != ndim || b->ndim != ndim || c->ndim != ndim) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: %s takes %d-d tensors (got %d, %d -> %d)", name, ndim,
                   (int)a->ndim, (int)b->ndim, (int)c->ndim);
  }
  if (a->dtype != HAL_DTYPE_F32 || b->dtype != HAL_DTYPE_F32 || c->dtype != HAL_DTYPE_F32) {
    DECLINE("%s: f32 only (dtypes %d, %d -> %d)", name, (int)a->dtype, (int)b->dtype, (int)c->dtype);
  }
  const int o = batched;  // Index of the first matrix dimension.
  const int64_t batch = batched ? a->sizes[0] : 1;
  const int64_t m = a->sizes[o], k = a->sizes[o + 1], n = b->sizes[o + 1];
  if (b->sizes[o] != k || c->sizes[o] != m || c->sizes[o + 1] != n ||
      (batched && (b->sizes[0] != batch || c->sizes[0] != batch))) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: %s: sizes do not match", name);
  }
  if (m == 0 || n == 0 || batch == 0) return cu_ok();  // No elements to write.
  if (!fits_int(m) || !fits_int(n) || !fits_int(k) || !fits_int(batch)) DECLINE("%s: a dimension beyond INT_MAX", name);
  cublasOperation_t opa, opb, opc;
  int64_t lda, ldb, ldc;
  if (!operand(m, n, c->strides[o], c->strides[o + 1], &opc, &ldc) || opc != CUBLAS_OP_N) {
    DECLINE("%s: the result's rows are not contiguous", name);
  }
  float* pc = (float*)c->data + c->offset;
  const int64_t sc = batched ? c->strides[0] : 0;
  if (batched && batch > 1 && sc < (m - 1) * ldc + n) DECLINE("%s: the result's matrices overlap", name);
  if (k == 0) {  // C = 0: a fill, when the result is one dense block.
    if (ldc != n || (batched && batch > 1 && sc != m * n)) DECLINE("%s: k = 0 with a strided result", name);
    CUresult r = g_cu.cuMemsetD8Async((CUdeviceptr)(uintptr_t)pc, 0, (size_t)(batch * m * n) * sizeof(float), cs);
    return r == CUDA_SUCCESS ? cu_ok() : cu_error(r, "cuMemsetD8Async", "%s with k = 0", name);
  }
  if (!operand(m, k, a->strides[o], a->strides[o + 1], &opa, &lda)) DECLINE("%s: self's layout (neither stride is 1)", name);
  if (!operand(k, n, b->strides[o], b->strides[o + 1], &opb, &ldb)) DECLINE("%s: mat2's layout (neither stride is 1)", name);
  const float* pa = (const float*)a->data + a->offset;
  const float* pb = (const float*)b->data + b->offset;
  const float one = 1.0f, zero = 0.0f;
  cu_device_t* d = &g_devices[device];
  pthread_mutex_lock(&d->mutex);  // One handle per device: its stream and the call are one step.
  cublasStatus_t s = 0;
  const char* call = "cublasCreate_v2";
  if (d->blas == NULL) s = g_blas.cublasCreate(&d->blas);
  if (s == 0) call = "cublasSetStream_v2", s = g_blas.cublasSetStream(d->blas, cs);
  if (s == 0 && !batched) {
    call = "cublasSgemm_v2";
    s = g_blas.cublasSgemm(d->blas, opb, opa, (int)n, (int)m, (int)k, &one, pb, (int)ldb, pa, (int)lda, &zero, pc,
                           (int)ldc);
  } else if (s == 0) {
    call = "cublasSgemmStridedBatched";
    s = g_blas.cublasSgemmStridedBatched(d->blas, opb, opa, (int)n, (int)m, (int)k, &one, pb, (int)ldb, b->strides[0],
                                         pa, (int)lda, a->strides[0], &zero, pc, (int)ldc, sc, (int)batch);
  }
  if (s != 0 && d->blas != NULL && strcmp(call, "cublasCreate_v2") == 0) d->blas = NULL;
  pthread_mutex_unlock(&d->mutex);
  if (s != 0) return blas_fail(s, call, name);
  return cu_ok();
}
