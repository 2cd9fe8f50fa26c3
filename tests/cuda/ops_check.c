// Drives the cuda plugin's op_launch for aten::mm / aten::bmm on the fake driver and fake cuBLAS (device memory is
// host memory there) over operand layouts ATen produces (contiguous, transposed, sliced, a row or column of one,
// batches with strides), and compares each result with a row-major product computed here. Prints one line per
// case and "ok N declined D" at the end; exits non-zero on a mismatch or an unexpected status.
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hal/plugin.h"

static const hal_plugin_api_t* api;

static void fill(float* p, int64_t n, int seed) {
  for (int64_t i = 0; i < n; i++) p[i] = (float)((i * 37 + seed * 11) % 17) - 8.0f;
}

// A (b x m x k) with strides sa, B (b x k x n) with strides sb, into a contiguous C; storage of |cap| floats each.
static int check(const char* label, int batched, int64_t b, int64_t m, int64_t k, int64_t n, const int64_t sa[3],
                 const int64_t sb[3], int64_t cap, int expect_decline, hal_stream_t s, int* declined) {
  float *A = NULL, *B = NULL, *C = NULL;
  api->memory_allocate(0, (uint64_t)cap * 4 + 4, (void**)&A);
  api->memory_allocate(0, (uint64_t)cap * 4 + 4, (void**)&B);
  api->memory_allocate(0, (uint64_t)(b * m * n) * 4 + 4, (void**)&C);
  fill(A, cap, 1), fill(B, cap, 2);
  for (int64_t i = 0; i < b * m * n; i++) C[i] = NAN;
  const int o = batched;
  int64_t asz[3] = {b, m, k}, bsz[3] = {b, k, n}, csz[3] = {b, m, n}, sc[3] = {m * n, n, 1};
  hal_value_t args[2];
  memset(args, 0, sizeof(args));
  args[0].kind = args[1].kind = HAL_VALUE_TENSOR;
  args[0].u.tensor = (hal_tensor_t){A, HAL_DTYPE_F32, 2 + o, asz + 1 - o, sa + 1 - o, 0};
  args[1].u.tensor = (hal_tensor_t){B, HAL_DTYPE_F32, 2 + o, bsz + 1 - o, sb + 1 - o, 0};
  hal_tensor_t result = {C, HAL_DTYPE_F32, 2 + o, csz + 1 - o, sc + 1 - o, 0};
  const hal_op_t* ops;
  uint64_t count = 0;
  api->op_list(0, &ops, &count);
  uint64_t index = count;
  for (uint64_t i = 0; i < count; i++) {
    if (strcmp(ops[i].name, batched ? "aten::bmm" : "aten::mm") == 0) index = i;
  }
  if (index == count) return printf("FAIL %s: not declared\n", label), 1;
  hal_status_t st = api->op_launch(s, index, args, 2, &result, 1);
  if (expect_decline) {
    if (st != HAL_STATUS_UNIMPLEMENTED) return printf("FAIL %s: expected a decline, got %d\n", label, st), 1;
    ++*declined;
    return 0;
  }
  if (st != HAL_STATUS_OK || api->stream_synchronize(s) != HAL_STATUS_OK) {
    char msg[512];
    api->get_last_error(msg, sizeof(msg), NULL);
    return printf("FAIL %s: status %d: %s\n", label, st, msg), 1;
  }
  for (int64_t z = 0; z < b; z++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        double acc = 0;
        for (int64_t p = 0; p < k; p++) {
          acc += (double)A[z * sa[0] + i * sa[1] + p * sa[2]] * B[z * sb[0] + p * sb[1] + j * sb[2]];
        }
        const float got = C[z * m * n + i * n + j];
        if (!(fabs(got - acc) <= 1e-3 * (1 + fabs(acc)))) {
          return printf("FAIL %s: C[%lld,%lld,%lld] = %g, expected %g\n", label, (long long)z, (long long)i,
                        (long long)j, got, acc), 1;
        }
      }
  printf("ok %s\n", label);
  api->memory_free(0, A), api->memory_free(0, B), api->memory_free(0, C);
  return 0;
}

int main(int argc, char** argv) {
  void* lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) return printf("FAIL dlopen: %s\n", dlerror()), 2;
  api = ((hal_plugin_get_api_fn)dlsym(lib, HAL_PLUGIN_ENTRY_SYMBOL))();
  hal_plugin_init_args_t init = {sizeof(init), HAL_ABI_VERSION_MAJOR, HAL_ABI_VERSION_MINOR, NULL};
  int32_t n = 0;
  if (api->initialize(&init) || api->device_count(&n) || n < 1) return printf("FAIL no device\n"), 2;
  hal_stream_t s;
  api->stream_create(0, &s);
  int bad = 0, declined = 0;
  const int64_t M = 5, K = 7, N = 3;
  // 2-d: strides {_, row, col} (the first entry is the batch stride, unused for mm).
  bad += check("mm contiguous", 0, 1, M, K, N, (int64_t[]){0, K, 1}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  bad += check("mm A transposed", 0, 1, M, K, N, (int64_t[]){0, 1, M}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  bad += check("mm B transposed", 0, 1, M, K, N, (int64_t[]){0, K, 1}, (int64_t[]){0, 1, K}, 64, 0, s, &declined);
  bad += check("mm both transposed", 0, 1, M, K, N, (int64_t[]){0, 1, M}, (int64_t[]){0, 1, K}, 64, 0, s, &declined);
  bad += check("mm row-sliced A (ld 9)", 0, 1, M, K, N, (int64_t[]){0, 9, 1}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  bad += check("mm column-sliced B^T (ld 10)", 0, 1, M, K, N, (int64_t[]){0, K, 1}, (int64_t[]){0, 1, 10}, 64, 0, s, &declined);
  bad += check("mm a row (m = 1, odd row stride)", 0, 1, 1, K, N, (int64_t[]){0, 1000, 1}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  bad += check("mm a column (n = 1, odd column stride)", 0, 1, M, K, 1, (int64_t[]){0, K, 1}, (int64_t[]){0, 1, 1000}, 64, 0, s, &declined);
  bad += check("mm k = 1", 0, 1, M, 1, N, (int64_t[]){0, 1, 1}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  bad += check("mm k = 0 (zeros)", 0, 1, M, 0, N, (int64_t[]){0, 0, 1}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  bad += check("mm neither stride 1 (declined)", 0, 1, M, K, N, (int64_t[]){0, 2 * K, 2}, (int64_t[]){0, N, 1}, 128, 1, s, &declined);
  bad += check("mm broadcast rows (declined)", 0, 1, M, K, N, (int64_t[]){0, 0, 1}, (int64_t[]){0, N, 1}, 64, 1, s, &declined);
  bad += check("bmm contiguous", 1, 4, M, K, N, (int64_t[]){M * K, K, 1}, (int64_t[]){K * N, N, 1}, 256, 0, s, &declined);
  bad += check("bmm transposed views", 1, 4, M, K, N, (int64_t[]){M * K, 1, M}, (int64_t[]){K * N, 1, K}, 256, 0, s, &declined);
  bad += check("bmm broadcast B (batch stride 0)", 1, 4, M, K, N, (int64_t[]){M * K, K, 1}, (int64_t[]){0, N, 1}, 256, 0, s, &declined);
  bad += check("bmm batch of one", 1, 1, M, K, N, (int64_t[]){12345, K, 1}, (int64_t[]){0, N, 1}, 64, 0, s, &declined);
  api->stream_destroy(s);
  api->shutdown();
  printf("%s ok %d declined %d\n", bad ? "FAILED" : "ALL", 16 - bad - declined, declined);
  return bad ? 1 : 0;
}
