// A stand-in for libcublas.so.12 for the fake driver (fake_libcuda.c, whose device memory is host memory): the
// reference column-major SGEMM of BLAS, so the cuda plugin's mapping of row-major strided ATen views onto cuBLAS
// (transpositions, leading dimensions, batch strides) is checked against torch without a GPU.
#include <stddef.h>

typedef struct cublasContext* cublasHandle_t;
static int g_handle;

int cublasCreate_v2(cublasHandle_t* h) { *h = (cublasHandle_t)&g_handle; return 0; }
int cublasDestroy_v2(cublasHandle_t h) { return 0; }
int cublasSetStream_v2(cublasHandle_t h, void* s) { return 0; }

// C (m x n, ldc) = alpha op(A) op(B) + beta C, column-major; op 0 = N, 1 = T.
static int gemm(int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B, int ldb,
                float beta, float* C, int ldc) {
  if (m < 0 || n < 0 || k < 0 || lda < (ta ? (k > 1 ? k : 1) : (m > 1 ? m : 1)) ||
      ldb < (tb ? (n > 1 ? n : 1) : (k > 1 ? k : 1)) || ldc < (m > 1 ? m : 1)) {
    return 7;  // CUBLAS_STATUS_INVALID_VALUE
  }
  for (int j = 0; j < n; j++) {
    for (int i = 0; i < m; i++) {
      double acc = 0;
      for (int p = 0; p < k; p++) {
        const float a = ta ? A[p + (size_t)i * lda] : A[i + (size_t)p * lda];
        const float b = tb ? B[j + (size_t)p * ldb] : B[p + (size_t)j * ldb];
        acc += (double)a * b;
      }
      float* c = &C[i + (size_t)j * ldc];
      *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : beta * *c));
    }
  }
  return 0;
}

int cublasSgemm_v2(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
  return gemm(ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
}

int cublasSgemmStridedBatched(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A,
                              int lda, long long sa, const float* B, int ldb, long long sb, const float* beta, float* C,
                              int ldc, long long sc, int batch) {
  for (int i = 0; i < batch; i++) {
    int s = gemm(ta, tb, m, n, k, *alpha, A + i * sa, lda, B + i * sb, ldb, *beta, C + i * sc, ldc);
    if (s) return s;
  }
  return 0;
}
