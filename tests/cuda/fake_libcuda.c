// A stand-in for libcuda.so.1 backed by host memory, for testing the cuda plugin's plumbing without a GPU
// (tests/cuda/test_cuda.py builds it into a temporary folder). It implements the driver entry points the plugin
// loads with the simplest semantics the driver API allows: every queued operation runs at once, in the calling
// thread (a stream that is always idle is in order), events complete when recorded, host functions run at once.
// Device memory is host memory here, so nothing checks that the plugin never dereferences it; real-driver
// behaviour (asynchrony, contexts, faults) is only tested on a GPU.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void (*CUhostFn)(void*);

static size_t g_used;
static const size_t kTotal = (size_t)1 << 30;
static int g_ctx_token, g_stream_token;

#define OK 0
int cuInit(unsigned flags) { return OK; }
int cuDriverGetVersion(int* v) { *v = 12040; return OK; }
int cuGetErrorName(CUresult r, const char** s) {
  *s = r == 1 ? "CUDA_ERROR_INVALID_VALUE" : r == 2 ? "CUDA_ERROR_OUT_OF_MEMORY" : r == 400 ? "CUDA_ERROR_INVALID_HANDLE"
       : r == 600 ? "CUDA_ERROR_NOT_READY" : "CUDA_ERROR_UNKNOWN";
  return OK;
}
int cuGetErrorString(CUresult r, const char** s) { *s = "fake driver"; return OK; }
int cuDeviceGetCount(int* n) { *n = 2; return OK; }
int cuDeviceGet(int* d, int i) { *d = i; return i >= 0 && i < 2 ? OK : 101; }
int cuDeviceGetName(char* name, int len, int dev) { strncpy(name, "Fake GPU", (size_t)len); return OK; }
int cuDeviceTotalMem_v2(size_t* bytes, int dev) { *bytes = kTotal; return OK; }
int cuDeviceGetAttribute(int* v, int attribute, int dev) { *v = attribute == 1 ? 1024 : attribute == 16 ? 4 : 1; return OK; }
int cuDeviceCanAccessPeer(int* can, int a, int b) { *can = 1; return OK; }
int cuDevicePrimaryCtxRetain(void** ctx, int dev) { *ctx = &g_ctx_token; return OK; }
int cuDevicePrimaryCtxRelease_v2(int dev) { return OK; }
int cuCtxSetCurrent(void* ctx) { return OK; }
int cuCtxSynchronize(void) { return OK; }
int cuCtxEnablePeerAccess(void* ctx, unsigned flags) { return OK; }

int cuMemAlloc_v2(CUdeviceptr* p, size_t size) {
  size_t used = __atomic_load_n(&g_used, __ATOMIC_RELAXED);
  if (size > kTotal - used) return 2;
  void* m = aligned_alloc(256, (size + 255) / 256 * 256 + 256);
  if (m == NULL) return 2;
  ((size_t*)m)[0] = size;  // The size lives in the first 256 bytes; the allocation starts after them.
  __atomic_add_fetch(&g_used, size, __ATOMIC_RELAXED);
  *p = (CUdeviceptr)(uintptr_t)((char*)m + 256);
  return OK;
}
int cuMemFree_v2(CUdeviceptr p) {
  if (p == 0 || p % 256 != 0) return 1;
  char* m = (char*)(uintptr_t)p - 256;
  __atomic_sub_fetch(&g_used, ((size_t*)m)[0], __ATOMIC_RELAXED);
  free(m);
  return OK;
}
int cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
  *free_bytes = kTotal - __atomic_load_n(&g_used, __ATOMIC_RELAXED);
  *total = kTotal;
  return OK;
}
int cuMemHostAlloc(void** p, size_t size, unsigned flags) { *p = malloc(size); return *p ? OK : 2; }
int cuMemFreeHost(void* p) { free(p); return OK; }
int cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, void* st) { memcpy((void*)(uintptr_t)d, s, n); return OK; }
int cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, void* st) { memcpy(d, (void*)(uintptr_t)s, n); return OK; }
int cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void* st) {
  memmove((void*)(uintptr_t)d, (void*)(uintptr_t)s, n);
  return OK;
}
int cuMemcpyPeerAsync(CUdeviceptr d, void* dc, CUdeviceptr s, void* sc, size_t n, void* st) {
  memmove((void*)(uintptr_t)d, (void*)(uintptr_t)s, n);
  return OK;
}
int cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void* st) { memset((void*)(uintptr_t)d, v, n); return OK; }

int cuStreamCreate(void** s, unsigned flags) { *s = &g_stream_token; return OK; }
int cuStreamDestroy_v2(void* s) { return OK; }
int cuStreamSynchronize(void* s) { return OK; }
int cuStreamQuery(void* s) { return OK; }
int cuStreamWaitEvent(void* s, void* e, unsigned flags) { return OK; }
int cuLaunchHostFunc(void* s, CUhostFn fn, void* data) { fn(data); return OK; }

typedef struct { int timing; double ms; } event_t;
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
int cuEventCreate(void** e, unsigned flags) {
  event_t* ev = calloc(1, sizeof(event_t));
  if (ev == NULL) return 2;
  ev->timing = !(flags & 2);
  *e = ev;
  return OK;
}
int cuEventDestroy_v2(void* e) { free(e); return OK; }
int cuEventRecord(void* e, void* s) { ((event_t*)e)->ms = now_ms(); return OK; }
int cuEventSynchronize(void* e) { return OK; }
int cuEventQuery(void* e) { return OK; }
int cuEventElapsedTime(float* ms, void* a, void* b) {
  if (!((event_t*)a)->timing || !((event_t*)b)->timing) return 400;
  *ms = (float)(((event_t*)b)->ms - ((event_t*)a)->ms);
  return OK;
}

// No code runs on this device: modules do not load.
int cuModuleLoadDataEx(void** m, const void* image, unsigned n, int* keys, void** values) { return 200; }
int cuModuleUnload(void* m) { return OK; }
int cuModuleGetFunction(void** f, void* m, const char* name) { return 500; }
int cuFuncGetAttribute(int* v, int attribute, void* f) { *v = 1024; return OK; }
int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh,
                   void* s, void** params, void** extra) { return 400; }
