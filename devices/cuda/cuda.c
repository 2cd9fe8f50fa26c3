// cuda: a HAL plugin for NVIDIA GPUs through the CUDA driver API, loaded at run time.
//
// Read top to bottom:
//   1. the error model, and CUresults translated in one place (cu_error);
//   2. loading the driver at run time: libcuda.so.1 (or $HAL_CUDA_LIBRARY) through dlopen and a table of entry
//      points (cuda_api.h); nothing is linked. No library, a library without an entry point, cuInit failing
//      (no GPU, no driver) or no device: zero devices, and HAL_CUDA_DEBUG=1 prints why;
//   3. devices: one per CUDA device, on its primary context, retained on first use and made current on every
//      entry that needs it (contexts are per thread);
//   4. memory: cuMemAlloc (the CUdeviceptr is the device pointer: base + offset works as memory.h promises);
//      pinned host memory with cuMemHostAlloc (portable: usable with every device);
//   5. streams (one CUstream each, non-blocking), events (one CUevent each), the sticky-error rule, copies,
//      fills, peer copies, host functions (cuLaunchHostFunc handing the function to the stream's own thread);
//   6. programs and kernels ("ptx", "cubin", "fatbin": cuModuleLoadDataEx; cuLaunchKernel);
//   7. the table. The operators (cuBLAS) are in cuda_ops.c, the collectives (NCCL) in cuda_collectives.c.
//
// Device memory is not host-addressable here and not mappable (memory.h's memory_map is not offered): the
// host reaches it through copies. The devices are real, not emulated.
//
// Environment: $HAL_CUDA_LIBRARY names the driver library to load (default libcuda.so.1, then libcuda.so);
// HAL_CUDA_DEBUG=1 prints why there are zero devices to stderr.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_plugin.h"

#ifndef HAL_PLUGIN_VERSION
#define HAL_PLUGIN_VERSION "0.1.0"
#endif

// ======================================================================================================
// 1. Error model
// ======================================================================================================

static _Thread_local char t_message[4096];
static _Thread_local int32_t t_native;

hal_status_t cu_ok(void) {
  t_message[0] = '\0';
  t_native = 0;
  return HAL_STATUS_OK;
}

hal_status_t cu_fail(hal_status_t status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(t_message, sizeof(t_message), format, args);
  va_end(args);
  t_native = 0;
  return status;
}

void cu_set_native(int32_t code) { t_native = code; }

// Names of the codes the plugin tells apart, for when the driver cannot name one (cuGetErrorName fails).
const char* cu_error_name(CUresult r) {
  const char* name = NULL;
  if (g_cu.cuGetErrorName && g_cu.cuGetErrorName(r, &name) == CUDA_SUCCESS && name) return name;
  switch (r) {
#define NAME(code) \
  case code: return #code;
    NAME(CUDA_SUCCESS) NAME(CUDA_ERROR_INVALID_VALUE) NAME(CUDA_ERROR_OUT_OF_MEMORY)
    NAME(CUDA_ERROR_NOT_INITIALIZED) NAME(CUDA_ERROR_DEINITIALIZED) NAME(CUDA_ERROR_STUB_LIBRARY)
    NAME(CUDA_ERROR_INSUFFICIENT_DRIVER) NAME(CUDA_ERROR_NO_DEVICE) NAME(CUDA_ERROR_INVALID_DEVICE)
    NAME(CUDA_ERROR_INVALID_IMAGE) NAME(CUDA_ERROR_INVALID_CONTEXT) NAME(CUDA_ERROR_NO_BINARY_FOR_GPU)
    NAME(CUDA_ERROR_INVALID_PTX) NAME(CUDA_ERROR_INVALID_HANDLE) NAME(CUDA_ERROR_NOT_FOUND)
    NAME(CUDA_ERROR_NOT_READY) NAME(CUDA_ERROR_ILLEGAL_ADDRESS) NAME(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
    NAME(CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) NAME(CUDA_ERROR_LAUNCH_FAILED)
#undef NAME
    default: return "CUDA_ERROR_<unknown>";
  }
}

static const char* error_string(CUresult r) {
  const char* text = NULL;
  if (g_cu.cuGetErrorString && g_cu.cuGetErrorString(r, &text) == CUDA_SUCCESS && text) return text;
  return "no description";
}

hal_status_t cu_status_of(CUresult r) {
  switch (r) {
    case CUDA_SUCCESS: return HAL_STATUS_OK;
    case CUDA_ERROR_OUT_OF_MEMORY: return HAL_STATUS_OUT_OF_MEMORY;
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_INVALID_HANDLE:
    case CUDA_ERROR_NOT_FOUND: return HAL_STATUS_INVALID_ARGUMENT;
    case CUDA_ERROR_NOT_READY: return HAL_STATUS_NOT_READY;
    default: return HAL_STATUS_DEVICE_ERROR;
  }
}

hal_status_t cu_error(CUresult r, const char* call, const char* detail_format, ...) {
  int n = snprintf(t_message, sizeof(t_message), "cuda: %s: %s (%d): %s", call, cu_error_name(r), (int)r,
                   error_string(r));
  if (detail_format && n > 0 && (size_t)n + 2 < sizeof(t_message)) {
    memcpy(t_message + n, "; ", 2);
    va_list args;
    va_start(args, detail_format);
    vsnprintf(t_message + n + 2, sizeof(t_message) - (size_t)n - 2, detail_format, args);
    va_end(args);
  }
  t_native = r;
  return cu_status_of(r);
}

static size_t cu_get_last_error(char* buffer, size_t capacity, int32_t* out_native) {
  size_t length = strlen(t_message);
  if (capacity > 0 && buffer != NULL) {
    size_t n = length < capacity - 1 ? length : capacity - 1;
    memcpy(buffer, t_message, n);
    buffer[n] = '\0';
  }
  if (out_native) *out_native = t_native;
  return length;
}

// ======================================================================================================
// 2. Loading the driver at run time
// ======================================================================================================

hal_cuda_api_t g_cu;
static void* g_library;
static char g_unavailable[512];  // Why there are zero devices ("" when there are some).

__attribute__((format(printf, 1, 2))) static void unavailable(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(g_unavailable, sizeof(g_unavailable), format, args);
  va_end(args);
  const char* debug = getenv("HAL_CUDA_DEBUG");
  if (debug && *debug && strcmp(debug, "0") != 0) fprintf(stderr, "hal cuda: no devices: %s\n", g_unavailable);
}

// 0 when every required entry point loaded; else says why (and what is missing) and clears the table.
static int load_library(void) {
  const char* path = getenv("HAL_CUDA_LIBRARY");
  const int given = path && *path;
  const char* candidates[] = {given ? path : "libcuda.so.1", given ? NULL : "libcuda.so"};
  const char* loaded = candidates[0];
  for (size_t i = 0; i < 2 && g_library == NULL && candidates[i]; i++) {
    g_library = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (g_library) loaded = candidates[i];
  }
  if (g_library == NULL) {
    const char* why = dlerror();
    unavailable("%s not found (%s): no NVIDIA driver here", candidates[0], why ? why : "dlopen failed");
    return -1;
  }
#define LOAD(ret, member, symbol, args)                                                   \
  g_cu.member = (ret(*) args)dlsym(g_library, #symbol);                                  \
  if (g_cu.member == NULL) {                                                             \
    unavailable("%s lacks the entry point %s (for %s)", loaded, #symbol, #member);        \
    memset(&g_cu, 0, sizeof(g_cu));                                                      \
    return -1;                                                                           \
  }
  HAL_CUDA_FUNCTIONS(LOAD)
#undef LOAD
#define LOAD_OPTIONAL(ret, member, symbol, args) g_cu.member = (ret(*) args)dlsym(g_library, #symbol);
  HAL_CUDA_OPTIONAL_FUNCTIONS(LOAD_OPTIONAL)
#undef LOAD_OPTIONAL
  return 0;
}

// ======================================================================================================
// 3. Devices
// ======================================================================================================

cu_device_t* g_devices;
int32_t g_device_count;
static int g_initialized;

hal_status_t cu_check_device(int32_t device) {
  if (!g_initialized) return cu_fail(HAL_STATUS_UNAVAILABLE, "cuda: the plugin is not initialized");
  if (device < 0 || device >= g_device_count) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: no device %d (%d devices)", (int)device, (int)g_device_count);
  }
  return HAL_STATUS_OK;
}

hal_status_t cu_bind(int32_t device) {
  hal_status_t status = cu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  cu_device_t* d = &g_devices[device];
  pthread_mutex_lock(&d->mutex);
  CUresult r = CUDA_SUCCESS;
  if (d->ctx == NULL) r = g_cu.cuDevicePrimaryCtxRetain(&d->ctx, d->dev);
  CUcontext ctx = d->ctx;
  pthread_mutex_unlock(&d->mutex);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuDevicePrimaryCtxRetain", "device %d (%s)", (int)device, d->name);
  r = g_cu.cuCtxSetCurrent(ctx);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuCtxSetCurrent", "device %d (%s)", (int)device, d->name);
  return HAL_STATUS_OK;
}

static int attribute(CUdevice dev, CUdevice_attribute what) {
  int v = 0;
  return g_cu.cuDeviceGetAttribute(&v, what, dev) == CUDA_SUCCESS ? v : 0;
}

// FP32 lanes per SM by compute capability: NVIDIA's own table (the CUDA samples' helper_cuda.h,
// _ConvertSMVer2Cores). 0 for an architecture it does not list: the peak is then unknown, not guessed.
static int fp32_lanes_per_sm(int major, int minor) {
  static const struct { int cc, lanes; } table[] = {
      {0x30, 192}, {0x32, 192}, {0x35, 192}, {0x37, 192}, {0x50, 128}, {0x52, 128}, {0x53, 128},
      {0x60, 64},  {0x61, 128}, {0x62, 128}, {0x70, 64},  {0x72, 64},  {0x75, 64},  {0x80, 64},
      {0x86, 128}, {0x87, 128}, {0x89, 128}, {0x90, 128}};
  const int cc = major * 16 + minor;
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
    if (table[i].cc == cc) return table[i].lanes;
  }
  return 0;
}

static void describe(cu_device_t* d) {
  g_cu.cuDeviceGetName(d->name, (int)sizeof(d->name) - 1, d->dev);
  d->name[sizeof(d->name) - 1] = '\0';
  size_t total = 0;
  if (g_cu.cuDeviceTotalMem(&total, d->dev) == CUDA_SUCCESS) d->capacity = total;
  d->sm_count = attribute(d->dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  d->clock_khz = attribute(d->dev, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
  d->cc_major = attribute(d->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  d->cc_minor = attribute(d->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  d->max_threads = attribute(d->dev, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
  // Peak FP32: SMs x lanes x boost clock x 2 (an FMA is two flops), NVIDIA's own formula for its datasheets.
  d->peak_f32 = (double)d->sm_count * fp32_lanes_per_sm(d->cc_major, d->cc_minor) * d->clock_khz * 1e3 * 2.0;
  // Memory bandwidth: 2 (double data rate) x memory clock x bus width in bytes, as the CUDA samples'
  // deviceQuery computes its "peak memory bandwidth".
  const int mem_khz = attribute(d->dev, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
  const int bus_bits = attribute(d->dev, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
  d->memory_bandwidth = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);
}

static void discover(void) {
  CUresult r = g_cu.cuInit(0);
  if (r != CUDA_SUCCESS) {
    unavailable("cuInit failed: %s (%d): %s", cu_error_name(r), (int)r, error_string(r));
    return;
  }
  int version = 0, count = 0;
  g_cu.cuDriverGetVersion(&version);
  r = g_cu.cuDeviceGetCount(&count);
  if (r != CUDA_SUCCESS) {
    unavailable("cuDeviceGetCount failed: %s (%d): %s", cu_error_name(r), (int)r, error_string(r));
    return;
  }
  if (count <= 0) {
    unavailable("the driver (CUDA %d.%d) reports no devices", version / 1000, version % 1000 / 10);
    return;
  }
  g_devices = calloc((size_t)count, sizeof(cu_device_t));
  if (g_devices == NULL) {
    unavailable("out of host memory");
    return;
  }
  for (int i = 0; i < count; i++) {
    cu_device_t* d = &g_devices[g_device_count];
    if ((r = g_cu.cuDeviceGet(&d->dev, i)) != CUDA_SUCCESS) {
      unavailable("cuDeviceGet(%d) failed: %s (%d)", i, cu_error_name(r), (int)r);
      continue;
    }
    describe(d);
    pthread_mutex_init(&d->mutex, NULL);
    g_device_count++;
  }
}

static hal_status_t cu_initialize(const hal_plugin_init_args_t* args) {
  (void)args;
  g_unavailable[0] = '\0';
  g_device_count = 0;
  if (load_library() == 0) discover();
  g_initialized = 1;
  return cu_ok();  // Zero devices is not an error: this machine has no NVIDIA driver or GPU.
}

static void cu_shutdown(void) {
  cu_collectives_shutdown();
  for (int32_t i = 0; i < g_device_count; i++) {
    cu_device_t* d = &g_devices[i];
    cu_ops_release(d);
    if (d->ctx) {
      if (g_cu.cuDevicePrimaryCtxRelease) g_cu.cuDevicePrimaryCtxRelease(d->dev);
      else if (g_cu.cuDevicePrimaryCtxReleaseV1) g_cu.cuDevicePrimaryCtxReleaseV1(d->dev);
    }
    pthread_mutex_destroy(&d->mutex);
  }
  free(g_devices);
  g_devices = NULL;
  g_device_count = 0;
  g_initialized = 0;
  // The library stays loaded: the driver's own threads may still run its code.
}

static hal_status_t cu_device_count(int32_t* out_count) {
  if (out_count == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: device_count: NULL output");
  *out_count = g_initialized ? g_device_count : 0;
  return cu_ok();
}

static hal_status_t cu_get_properties(int32_t device, hal_device_properties_t* out) {
  hal_status_t status = cu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL || out->struct_size < offsetof(hal_device_properties_t, name)) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: device_get_properties: NULL or too small a struct");
  }
  const cu_device_t* d = &g_devices[device];
  hal_device_properties_t p;
  memset(&p, 0, sizeof(p));
  snprintf(p.name, sizeof(p.name), "%s", d->name);
  snprintf(p.vendor, sizeof(p.vendor), "NVIDIA");
  p.kind = HAL_DEVICE_KIND_GPU;
  p.flags = 0;  // Not host-addressable, not mappable, not emulated.
  p.total_memory_bytes = d->capacity;
  p.peak_flops[HAL_DTYPE_F32] = d->peak_f32;  // 0 (unknown) for an architecture the table lacks.
  p.memory_bandwidth = d->memory_bandwidth;
  const size_t n = out->struct_size < sizeof(p) ? out->struct_size : sizeof(p);
  memcpy((char*)out + sizeof(size_t), (const char*)&p + sizeof(size_t), n - sizeof(size_t));
  return cu_ok();
}

static hal_status_t cu_get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  hal_status_t status = cu_bind(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_free == NULL || out_total == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: NULL output");
  size_t free_bytes = 0, total = 0;
  CUresult r = g_cu.cuMemGetInfo(&free_bytes, &total);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemGetInfo", "device %d", (int)device);
  *out_free = free_bytes;
  *out_total = total;
  return cu_ok();
}

// ======================================================================================================
// 4. Memory
// ======================================================================================================

static hal_status_t cu_memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
  hal_status_t status = cu_bind(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ptr == NULL || size == 0) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memory_allocate: size 0 or NULL output");
  CUdeviceptr p = 0;
  CUresult r = size > SIZE_MAX ? CUDA_ERROR_OUT_OF_MEMORY : g_cu.cuMemAlloc(&p, (size_t)size);
  if (r != CUDA_SUCCESS) {
    size_t free_bytes = 0, total = 0;
    if (g_cu.cuMemGetInfo(&free_bytes, &total) != CUDA_SUCCESS) free_bytes = total = 0;
    status = cu_error(r, "cuMemAlloc", "%llu bytes requested on device %d (%s), %llu in use, capacity %llu",
                      (unsigned long long)size, (int)device, g_devices[device].name,
                      (unsigned long long)(total - free_bytes), (unsigned long long)total);
    return status;
  }
  *out_ptr = (void*)(uintptr_t)p;  // cuMemAlloc aligns to at least 256 bytes.
  return cu_ok();
}

static hal_status_t cu_memory_free(int32_t device, void* ptr) {
  hal_status_t status = cu_bind(device);
  if (status != HAL_STATUS_OK) return status;
  if (ptr == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memory_free: NULL pointer");
  CUresult r = g_cu.cuMemFree((CUdeviceptr)(uintptr_t)ptr);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemFree", "%p on device %d (not an allocation?)", ptr, (int)device);
  return cu_ok();
}

// Pinned host memory needs a context; any device's does (the allocation is portable to all of them).
static hal_status_t cu_host_allocate(uint64_t size, void** out_ptr) {
  if (out_ptr == NULL || size == 0) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: host_allocate: size 0 or NULL output");
  if (g_initialized && g_device_count == 0) return cu_fail(HAL_STATUS_UNAVAILABLE, "cuda: host_allocate: no devices");
  hal_status_t status = cu_bind(0);
  if (status != HAL_STATUS_OK) return status;
  void* p = NULL;
  CUresult r = size > SIZE_MAX ? CUDA_ERROR_OUT_OF_MEMORY : g_cu.cuMemHostAlloc(&p, (size_t)size, CU_MEMHOSTALLOC_PORTABLE);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemHostAlloc", "%llu bytes of pinned host memory", (unsigned long long)size);
  *out_ptr = p;
  return cu_ok();
}

static hal_status_t cu_host_free(void* ptr) {
  if (ptr == NULL) return cu_ok();
  hal_status_t status = cu_bind(0);
  if (status != HAL_STATUS_OK) return status;
  CUresult r = g_cu.cuMemFreeHost(ptr);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemFreeHost", "%p", ptr);
  return cu_ok();
}

// ======================================================================================================
// 5. Streams, events, copies, host functions
// ======================================================================================================

#define STREAM_MAGIC 0x43554453u  // "CUDS"
#define EVENT_MAGIC 0x43554445u   // "CUDE"

typedef struct host_call_t host_call_t;

struct hal_stream_s {
  uint32_t magic;
  int32_t device;
  CUstream stream;
  // A failure the driver does not see (cu_stream_set_fault), reported by the next synchronize / idle query.
  pthread_mutex_t mutex;
  hal_status_t fault;
  char fault_message[512];
  // The host thread of launch_host_func (started by the first), and the functions handed to it.
  pthread_mutex_t host_mutex;
  pthread_cond_t host_cv;    // Signals the thread: a call arrived, or stop.
  pthread_cond_t done_cv;    // Signals the driver's callbacks: a call finished.
  pthread_t host_thread;
  int host_started, host_stop;
  host_call_t* host_head;
  host_call_t* host_tail;
};

struct hal_event_s {
  uint32_t magic;
  int32_t device;
  uint32_t flags;
  CUevent event;
  int recorded;  // Set by the first record (elapsed_time refuses events never recorded).
};

static hal_status_t check_stream(hal_stream_t s) {
  if (s == NULL || s->magic != STREAM_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not a stream of this plugin");
  return HAL_STATUS_OK;
}

static hal_status_t check_event(hal_event_t e) {
  if (e == NULL || e->magic != EVENT_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not an event of this plugin");
  return HAL_STATUS_OK;
}

// Checks |s| and binds its device's context.
static hal_status_t bind_stream(hal_stream_t s) {
  hal_status_t status = check_stream(s);
  return status == HAL_STATUS_OK ? cu_bind(s->device) : status;
}

hal_status_t cu_stream_get(hal_stream_t s, CUstream* out_stream, int32_t* out_device) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  *out_stream = s->stream;
  *out_device = s->device;
  return HAL_STATUS_OK;
}

void cu_stream_set_fault(hal_stream_t s, hal_status_t status, const char* message) {
  pthread_mutex_lock(&s->mutex);
  if (s->fault == HAL_STATUS_OK) {
    s->fault = status;
    snprintf(s->fault_message, sizeof(s->fault_message), "%s", message);
  }
  pthread_mutex_unlock(&s->mutex);
}

// Reports (and clears) the stream's plugin-side fault; OK when there is none.
static hal_status_t take_fault(hal_stream_t s) {
  pthread_mutex_lock(&s->mutex);
  hal_status_t status = s->fault;
  if (status != HAL_STATUS_OK) cu_fail(status, "%s", s->fault_message);
  s->fault = HAL_STATUS_OK;
  pthread_mutex_unlock(&s->mutex);
  return status;
}

static hal_status_t cu_stream_create(int32_t device, hal_stream_t* out) {
  hal_status_t status = cu_bind(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: stream_create: NULL output");
  hal_stream_t s = calloc(1, sizeof(*s));
  if (s == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: stream_create: out of host memory");
  // Non-blocking: no implicit order with the legacy default stream of other code in the process.
  CUresult r = g_cu.cuStreamCreate(&s->stream, CU_STREAM_NON_BLOCKING);
  if (r != CUDA_SUCCESS) {
    free(s);
    return cu_error(r, "cuStreamCreate", "device %d", (int)device);
  }
  s->magic = STREAM_MAGIC;
  s->device = device;
  pthread_mutex_init(&s->mutex, NULL);
  pthread_mutex_init(&s->host_mutex, NULL);
  pthread_cond_init(&s->host_cv, NULL);
  pthread_cond_init(&s->done_cv, NULL);
  *out = s;
  return cu_ok();
}

// The sticky-error rule: the driver reports a failure of queued work at the next cuStreamSynchronize (and, as a
// context-wide error, to every later call: a fault such as CUDA_ERROR_ILLEGAL_ADDRESS breaks the context for
// good, so unlike other plugins this one cannot clear it; see README.md).
static hal_status_t cu_stream_synchronize(hal_stream_t s) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  CUresult r = g_cu.cuStreamSynchronize(s->stream);
  hal_status_t fault = take_fault(s);  // A collective's timeout or abort names the cause better.
  if (fault != HAL_STATUS_OK) return fault;
  if (r != CUDA_SUCCESS) {
    status = cu_error(r, "cuStreamSynchronize", "queued work failed on device %d", (int)s->device);
    return status == HAL_STATUS_NOT_READY ? HAL_STATUS_DEVICE_ERROR : status;
  }
  return cu_ok();
}

static hal_status_t cu_stream_query(hal_stream_t s) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  CUresult r = g_cu.cuStreamQuery(s->stream);
  if (r == CUDA_ERROR_NOT_READY) return cu_fail(HAL_STATUS_NOT_READY, "cuda: the stream has work queued");
  hal_status_t fault = take_fault(s);
  if (fault != HAL_STATUS_OK) return fault;
  if (r != CUDA_SUCCESS) return cu_error(r, "cuStreamQuery", "queued work failed on device %d", (int)s->device);
  return cu_ok();
}

static hal_status_t cu_stream_destroy(hal_stream_t s) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  g_cu.cuStreamSynchronize(s->stream);  // stream.h: waits for queued work (its host functions included).
  pthread_mutex_lock(&s->host_mutex);
  s->host_stop = 1;
  pthread_cond_signal(&s->host_cv);
  const int joined = s->host_started;
  pthread_mutex_unlock(&s->host_mutex);
  if (joined) pthread_join(s->host_thread, NULL);
  g_cu.cuStreamDestroy(s->stream);
  s->magic = 0;
  pthread_mutex_destroy(&s->mutex);
  pthread_mutex_destroy(&s->host_mutex);
  pthread_cond_destroy(&s->host_cv);
  pthread_cond_destroy(&s->done_cv);
  free(s);
  return cu_ok();  // The sticky error, if any, is discarded (stream.h).
}

static hal_status_t cu_stream_wait_event(hal_stream_t s, hal_event_t e) {
  hal_status_t status = bind_stream(s);
  if (status == HAL_STATUS_OK) status = check_event(e);
  if (status != HAL_STATUS_OK) return status;
  // An event of another device works too: the driver synchronizes across devices. Never recorded: complete.
  CUresult r = g_cu.cuStreamWaitEvent(s->stream, e->event, 0);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuStreamWaitEvent", "stream of device %d, event of device %d", (int)s->device, (int)e->device);
  return cu_ok();
}

static hal_status_t cu_event_create(int32_t device, uint32_t flags, hal_event_t* out) {
  hal_status_t status = cu_bind(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: event_create: NULL output");
  hal_event_t e = calloc(1, sizeof(*e));
  if (e == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: event_create: out of host memory");
  CUresult r = g_cu.cuEventCreate(&e->event, (flags & HAL_EVENT_FLAG_TIMING) ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING);
  if (r != CUDA_SUCCESS) {
    free(e);
    return cu_error(r, "cuEventCreate", "device %d", (int)device);
  }
  e->magic = EVENT_MAGIC;
  e->device = device;
  e->flags = flags;
  *out = e;
  return cu_ok();
}

static hal_status_t cu_event_destroy(hal_event_t e) {
  hal_status_t status = check_event(e);
  if (status == HAL_STATUS_OK) status = cu_bind(e->device);
  if (status != HAL_STATUS_OK) return status;
  // A stream still waiting on it is fine: the driver releases the event once the wait completes.
  CUresult r = g_cu.cuEventDestroy(e->event);
  e->magic = 0;
  free(e);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuEventDestroy", NULL);
  return cu_ok();
}

static hal_status_t cu_event_record(hal_event_t e, hal_stream_t s) {
  hal_status_t status = check_event(e);
  if (status == HAL_STATUS_OK) status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (e->device != s->device) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: event_record: an event of device %d recorded on a stream of "
                   "device %d (CUDA records an event only on its own device's streams)", (int)e->device, (int)s->device);
  }
  CUresult r = g_cu.cuEventRecord(e->event, s->stream);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuEventRecord", "device %d", (int)s->device);
  __atomic_store_n(&e->recorded, 1, __ATOMIC_RELEASE);
  return cu_ok();
}

static hal_status_t cu_event_synchronize(hal_event_t e) {
  hal_status_t status = check_event(e);
  if (status == HAL_STATUS_OK) status = cu_bind(e->device);
  if (status != HAL_STATUS_OK) return status;
  CUresult r = g_cu.cuEventSynchronize(e->event);
  if (r != CUDA_SUCCESS) {
    status = cu_error(r, "cuEventSynchronize", "work before the event failed on device %d", (int)e->device);
    return status == HAL_STATUS_NOT_READY ? HAL_STATUS_DEVICE_ERROR : status;
  }
  return cu_ok();
}

static hal_status_t cu_event_query(hal_event_t e) {
  hal_status_t status = check_event(e);
  if (status == HAL_STATUS_OK) status = cu_bind(e->device);
  if (status != HAL_STATUS_OK) return status;
  CUresult r = g_cu.cuEventQuery(e->event);
  if (r == CUDA_ERROR_NOT_READY) return cu_fail(HAL_STATUS_NOT_READY, "cuda: the event has not completed");
  if (r != CUDA_SUCCESS) return cu_error(r, "cuEventQuery", "device %d", (int)e->device);
  return cu_ok();
}

static hal_status_t cu_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  hal_status_t status = check_event(start);
  if (status == HAL_STATUS_OK) status = check_event(end);
  if (status == HAL_STATUS_OK) status = cu_bind(start->device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ms == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: event_elapsed_time: NULL output");
  if (!(start->flags & HAL_EVENT_FLAG_TIMING) || !(end->flags & HAL_EVENT_FLAG_TIMING)) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: event_elapsed_time: both events need HAL_EVENT_FLAG_TIMING");
  }
  if (!__atomic_load_n(&start->recorded, __ATOMIC_ACQUIRE) || !__atomic_load_n(&end->recorded, __ATOMIC_ACQUIRE)) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: event_elapsed_time: an event was never recorded");
  }
  CUresult r = g_cu.cuEventElapsedTime(out_ms, start->event, end->event);
  if (r == CUDA_ERROR_NOT_READY) return cu_fail(HAL_STATUS_NOT_READY, "cuda: an event has not completed");
  if (r != CUDA_SUCCESS) return cu_error(r, "cuEventElapsedTime", NULL);
  return cu_ok();
}

#define DEVPTR(p) ((CUdeviceptr)(uintptr_t)(p))

static hal_status_t cu_h2d(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (size == 0) return cu_ok();  // In-order streams: a no-op already keeps its place.
  if (dst == NULL || src == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memcpy_h2d_async: NULL pointer");
  CUresult r = g_cu.cuMemcpyHtoDAsync(DEVPTR(dst), src, (size_t)size, s->stream);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemcpyHtoDAsync", "memcpy_h2d_async of %llu bytes to %p", (unsigned long long)size, dst);
  return cu_ok();
}

static hal_status_t cu_d2h(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (size == 0) return cu_ok();
  if (dst == NULL || src == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memcpy_d2h_async: NULL pointer");
  CUresult r = g_cu.cuMemcpyDtoHAsync(dst, DEVPTR(src), (size_t)size, s->stream);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemcpyDtoHAsync", "memcpy_d2h_async of %llu bytes from %p", (unsigned long long)size, src);
  return cu_ok();
}

static hal_status_t cu_d2d(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (size == 0) return cu_ok();
  if (dst == NULL || src == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memcpy_d2d_async: NULL pointer");
  CUresult r = g_cu.cuMemcpyDtoDAsync(DEVPTR(dst), DEVPTR(src), (size_t)size, s->stream);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemcpyDtoDAsync", "memcpy_d2d_async of %llu bytes", (unsigned long long)size);
  return cu_ok();
}

// Peer access, enabled once per ordered pair (a's context may access b's memory) where the driver says it can:
// then cuMemcpyPeerAsync copies over NVLink / PCIe directly; without it the driver stages the copy itself.
static pthread_mutex_t g_peer_mutex = PTHREAD_MUTEX_INITIALIZER;
static uint8_t* g_peer_state;  // g_device_count^2 entries: 0 not tried, 1 tried.

static void enable_peer_access(int32_t a, int32_t b) {
  if (a == b) return;
  pthread_mutex_lock(&g_peer_mutex);
  if (g_peer_state == NULL) g_peer_state = calloc((size_t)g_device_count * (size_t)g_device_count, 1);
  const int tried = g_peer_state == NULL || g_peer_state[a * g_device_count + b];
  if (!tried) g_peer_state[a * g_device_count + b] = 1;
  pthread_mutex_unlock(&g_peer_mutex);
  if (tried) return;
  int can = 0;
  if (g_cu.cuDeviceCanAccessPeer(&can, g_devices[a].dev, g_devices[b].dev) != CUDA_SUCCESS || !can) return;
  if (cu_bind(b) != HAL_STATUS_OK || cu_bind(a) != HAL_STATUS_OK) return;  // Retains both contexts.
  g_cu.cuCtxEnablePeerAccess(g_devices[b].ctx, 0);  // CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED is fine.
}

static hal_status_t cu_peer(hal_stream_t s, void* dst, int32_t dst_device, const void* src, int32_t src_device,
                            uint64_t size) {
  hal_status_t status = check_stream(s);
  if (status == HAL_STATUS_OK) status = cu_check_device(dst_device);
  if (status == HAL_STATUS_OK) status = cu_check_device(src_device);
  if (status != HAL_STATUS_OK) return status;
  if (s->device != dst_device && s->device != src_device) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memcpy_peer_async: the stream's device %d is neither %d nor %d",
                   (int)s->device, (int)src_device, (int)dst_device);
  }
  if (dst_device == src_device) return cu_d2d(s, dst, src, size);
  enable_peer_access(src_device, dst_device);
  enable_peer_access(dst_device, src_device);
  if ((status = cu_bind(dst_device == s->device ? src_device : dst_device)) != HAL_STATUS_OK) return status;
  if ((status = bind_stream(s)) != HAL_STATUS_OK) return status;
  if (size == 0) return cu_ok();
  if (dst == NULL || src == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memcpy_peer_async: NULL pointer");
  CUresult r = g_cu.cuMemcpyPeerAsync(DEVPTR(dst), g_devices[dst_device].ctx, DEVPTR(src), g_devices[src_device].ctx,
                                      (size_t)size, s->stream);
  if (r != CUDA_SUCCESS) {
    return cu_error(r, "cuMemcpyPeerAsync", "%llu bytes from device %d to device %d", (unsigned long long)size,
                    (int)src_device, (int)dst_device);
  }
  return cu_ok();
}

// The "hal.topology" extension (hal/topology.h, ABI 1.2): the host over PCIe, and each other device with direct
// peer access where cuDeviceCanAccessPeer says so (PCIe as far as the driver API tells: NVLink would need NVML),
// else staged through the host. Bandwidths and latencies are not measured: 0, unknown.
static hal_status_t cu_device_links(int32_t device, hal_link_t* out_links, uint64_t capacity, uint64_t* out_count) {
  hal_status_t status = cu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_count == NULL || (capacity > 0 && out_links == NULL)) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: device_links needs out_count (and out_links for capacity > 0)");
  }
  uint64_t n = 0;
  if (n < capacity) out_links[n] = (hal_link_t){HAL_LINK_PEER_HOST, HAL_LINK_KIND_PCIE, 0, 0, 0, 0};
  ++n;
  for (int32_t peer = 0; peer < g_device_count; ++peer) {
    if (peer == device) continue;
    int can = 0;
    CUresult r = g_cu.cuDeviceCanAccessPeer(&can, g_devices[device].dev, g_devices[peer].dev);
    if (r != CUDA_SUCCESS) return cu_error(r, "cuDeviceCanAccessPeer", "devices %d and %d", (int)device, (int)peer);
    if (n < capacity) {
      out_links[n] = can ? (hal_link_t){peer, HAL_LINK_KIND_PCIE, HAL_LINK_FLAG_PEER_ACCESS, 0, 0, 0}
                         : (hal_link_t){peer, HAL_LINK_KIND_HOST_STAGED, 0, 0, 0, 0};
    }
    ++n;
  }
  *out_count = n;
  return cu_ok();
}

static const hal_topology_extension_t g_topology = {
    .base = {.struct_size = sizeof(hal_topology_extension_t), .name = HAL_TOPOLOGY_EXTENSION_NAME,
             .version = HAL_TOPOLOGY_EXTENSION_VERSION, .next = NULL},
    .device_links = cu_device_links,
};

static hal_status_t cu_memset(hal_stream_t s, void* dst, uint8_t value, uint64_t size) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (size == 0) return cu_ok();
  if (dst == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: memset_async: NULL pointer");
  CUresult r = g_cu.cuMemsetD8Async(DEVPTR(dst), value, (size_t)size, s->stream);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuMemsetD8Async", "%llu bytes at %p", (unsigned long long)size, dst);
  return cu_ok();
}

// Host functions. cuLaunchHostFunc runs its callback on a thread of the driver's, where no CUDA call is allowed
// (the driver's documentation: "the host function must not make any CUDA API calls"), yet HAL's host functions may
// call into the plugin (free pinned memory, wait on another plugin's event). So the callback hands the function
// to the stream's own host thread and waits there until it has run: the stream's later work still waits for
// it (the driver holds the stream until its callback returns), and the function runs on a thread where CUDA
// calls are allowed.
struct host_call_t {
  hal_host_fn fn;
  void* user_data;
  int done;
  host_call_t* next;
  hal_stream_t stream;
};

static void* host_thread_main(void* arg) {
  hal_stream_t s = arg;
  pthread_mutex_lock(&s->host_mutex);
  for (;;) {
    while (s->host_head == NULL && !s->host_stop) pthread_cond_wait(&s->host_cv, &s->host_mutex);
    host_call_t* call = s->host_head;
    if (call == NULL) break;  // Stopping, and nothing is left.
    s->host_head = call->next;
    if (s->host_head == NULL) s->host_tail = NULL;
    pthread_mutex_unlock(&s->host_mutex);
    call->fn(call->user_data);
    pthread_mutex_lock(&s->host_mutex);
    call->done = 1;
    pthread_cond_broadcast(&s->done_cv);
  }
  pthread_mutex_unlock(&s->host_mutex);
  return NULL;
}

static void host_callback(void* data) {  // On the driver's thread: no CUDA calls here.
  host_call_t* call = data;
  hal_stream_t s = call->stream;
  pthread_mutex_lock(&s->host_mutex);
  if (s->host_tail) s->host_tail->next = call;
  else s->host_head = call;
  s->host_tail = call;
  pthread_cond_signal(&s->host_cv);
  while (!call->done) pthread_cond_wait(&s->done_cv, &s->host_mutex);
  pthread_mutex_unlock(&s->host_mutex);
  free(call);
}

static hal_status_t cu_launch_host_func(hal_stream_t s, hal_host_fn fn, void* user_data) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (fn == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: launch_host_func: fn is NULL");
  pthread_mutex_lock(&s->host_mutex);
  const int started = s->host_started || pthread_create(&s->host_thread, NULL, host_thread_main, s) == 0;
  s->host_started = started;
  pthread_mutex_unlock(&s->host_mutex);
  if (!started) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: launch_host_func: cannot start the stream's host thread");
  host_call_t* call = calloc(1, sizeof(*call));
  if (call == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: launch_host_func: out of host memory");
  call->fn = fn;
  call->user_data = user_data;
  call->stream = s;
  CUresult r = g_cu.cuLaunchHostFunc(s->stream, host_callback, call);
  if (r != CUDA_SUCCESS) {
    free(call);
    return cu_error(r, "cuLaunchHostFunc", "device %d", (int)s->device);
  }
  return cu_ok();
}

// ======================================================================================================
// 6. Programs and kernels
// ======================================================================================================

#define PROGRAM_MAGIC 0x43554450u  // "CUDP"
#define KERNEL_MAGIC 0x4355444bu   // "CUDK"
#define MAX_PARAMS 256

struct hal_program_s {
  uint32_t magic;
  int32_t device;
  CUmodule module;
  int kernels;  // Live kernels (kernel.h: a program outlives them).
  pthread_mutex_t mutex;
};

struct hal_kernel_s {
  uint32_t magic;
  hal_program_t program;
  CUfunction function;
  char name[128];
  int max_threads;      // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
  int num_params;       // -1: unknown (a driver before CUDA 12.4 has no cuFuncGetParamInfo)
  size_t* param_sizes;  // |num_params| entries
};

// "ptx" (text; NUL-terminated here), "cubin" and "fatbin" (ELF / fat binaries): all through cuModuleLoadDataEx,
// which JIT-compiles PTX for the device and returns its log on failure.
static hal_status_t cu_program_create(int32_t device, const char* format, const void* data, uint64_t size,
                                      const char* options, hal_program_t* out) {
  hal_status_t status = cu_bind(device);
  if (status != HAL_STATUS_OK) return status;
  if (format == NULL || data == NULL || out == NULL || size == 0) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: program_create: NULL format, data or output, or size 0");
  }
  const int ptx = strcmp(format, "ptx") == 0;
  if (!ptx && strcmp(format, "cubin") != 0 && strcmp(format, "fatbin") != 0) {
    return cu_fail(HAL_STATUS_UNIMPLEMENTED, "cuda: program format '%s' is not taken (takes: ptx, cubin, fatbin)", format);
  }
  if (options && *options) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: program_create: build options are not taken (got '%s'): "
                   "compile them into the PTX or cubin", options);
  }
  char* image = malloc((size_t)size + 1);  // PTX must end with a NUL; a copy also keeps |data| read-only.
  if (image == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: program_create: out of host memory");
  memcpy(image, data, (size_t)size);
  image[size] = '\0';
  static _Thread_local char error_log[8192];
  error_log[0] = '\0';
  CUjit_option keys[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void* values[] = {error_log, (void*)(uintptr_t)sizeof(error_log)};
  CUmodule module = NULL;
  CUresult r = g_cu.cuModuleLoadDataEx(&module, image, 2, keys, values);
  free(image);
  if (r != CUDA_SUCCESS) {
    error_log[sizeof(error_log) - 1] = '\0';
    status = cu_error(r, "cuModuleLoadDataEx", "%s for device %d: %s", format, (int)device,
                      error_log[0] ? error_log : "no log");
    // A program that does not build is the caller's (kernel.h): INVALID_ARGUMENT with the log.
    return status == HAL_STATUS_DEVICE_ERROR && r != CUDA_ERROR_ILLEGAL_ADDRESS && r != CUDA_ERROR_LAUNCH_FAILED
               ? HAL_STATUS_INVALID_ARGUMENT : status;
  }
  hal_program_t p = calloc(1, sizeof(*p));
  if (p == NULL) {
    g_cu.cuModuleUnload(module);
    return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: program_create: out of host memory");
  }
  p->magic = PROGRAM_MAGIC;
  p->device = device;
  p->module = module;
  pthread_mutex_init(&p->mutex, NULL);
  *out = p;
  return cu_ok();
}

static hal_status_t cu_program_destroy(hal_program_t p) {
  if (p == NULL || p->magic != PROGRAM_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not a program of this plugin");
  pthread_mutex_lock(&p->mutex);
  int live = p->kernels;
  pthread_mutex_unlock(&p->mutex);
  if (live) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: program_destroy: %d of its kernels are alive", live);
  hal_status_t status = cu_bind(p->device);
  if (status != HAL_STATUS_OK) return status;
  // Launches of its kernels may still be queued (kernel.h lets a kernel be destroyed with launches in flight):
  // the module's code must outlive them, so wait for the device before unloading it.
  g_cu.cuCtxSynchronize();
  g_cu.cuModuleUnload(p->module);
  p->magic = 0;
  pthread_mutex_destroy(&p->mutex);
  free(p);
  return cu_ok();
}

static hal_status_t cu_kernel_create(hal_program_t p, const char* name, hal_kernel_t* out) {
  if (p == NULL || p->magic != PROGRAM_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not a program of this plugin");
  if (name == NULL || out == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel_create: NULL name or output");
  hal_status_t status = cu_bind(p->device);
  if (status != HAL_STATUS_OK) return status;
  CUfunction f = NULL;
  CUresult r = g_cu.cuModuleGetFunction(&f, p->module, name);
  if (r != CUDA_SUCCESS) {
    status = cu_error(r, "cuModuleGetFunction", "no kernel '%s' in the program (an extern \"C\" __global__ "
                      "function keeps its name; a C++ one is mangled)", name);
    return status == HAL_STATUS_DEVICE_ERROR ? HAL_STATUS_INVALID_ARGUMENT : status;
  }
  hal_kernel_t k = calloc(1, sizeof(*k));
  if (k == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: kernel_create: out of host memory");
  k->magic = KERNEL_MAGIC;
  k->program = p;
  k->function = f;
  snprintf(k->name, sizeof(k->name), "%s", name);
  if (g_cu.cuFuncGetAttribute(&k->max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f) != CUDA_SUCCESS) {
    k->max_threads = 0;
  }
  k->num_params = -1;
  if (g_cu.cuFuncGetParamInfo) {
    size_t sizes[MAX_PARAMS];
    int n = 0;
    size_t offset = 0, bytes = 0;
    while (n < MAX_PARAMS && g_cu.cuFuncGetParamInfo(f, (size_t)n, &offset, &bytes) == CUDA_SUCCESS) sizes[n++] = bytes;
    k->param_sizes = malloc(sizeof(size_t) * (size_t)(n ? n : 1));
    if (k->param_sizes) {
      memcpy(k->param_sizes, sizes, sizeof(size_t) * (size_t)n);
      k->num_params = n;
    }
  }
  pthread_mutex_lock(&p->mutex);
  p->kernels++;
  pthread_mutex_unlock(&p->mutex);
  *out = k;
  return cu_ok();
}

static hal_status_t cu_kernel_destroy(hal_kernel_t k) {
  if (k == NULL || k->magic != KERNEL_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not a kernel of this plugin");
  // A CUfunction belongs to its module: nothing to release; queued launches run (the module stays loaded).
  pthread_mutex_lock(&k->program->mutex);
  k->program->kernels--;
  pthread_mutex_unlock(&k->program->mutex);
  free(k->param_sizes);
  k->magic = 0;
  free(k);
  return cu_ok();
}

// Launches. |global| counts threads (work items) as kernel.h says; the grid is ceil(global / block) blocks in
// each dimension, so a kernel checks its index against the size it is given (as CUDA kernels do). A BUFFER
// argument is one parameter, the device pointer itself (base + offset: a CUdeviceptr, 8 bytes); BYTES is one
// parameter of its size; LOCAL arguments are no parameter: their sizes add up to the launch's dynamic shared
// memory (extern __shared__), which the kernel divides in the order they were given.
static hal_status_t cu_kernel_launch(hal_stream_t s, hal_kernel_t k, const uint64_t global[3], const uint64_t* local,
                                     const hal_kernel_arg_t* args, uint64_t num_args) {
  hal_status_t status = bind_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (k == NULL || k->magic != KERNEL_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not a kernel of this plugin");
  if (k->program->device != s->device) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s' was built for device %d, not the stream's %d",
                   k->name, (int)k->program->device, (int)s->device);
  }
  if (global == NULL || (num_args && args == NULL)) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel_launch: NULL sizes or arguments");
  if (num_args > MAX_PARAMS) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s': more than %d arguments", k->name, MAX_PARAMS);
  void* params[MAX_PARAMS];
  CUdeviceptr pointers[MAX_PARAMS];
  int count = 0;
  uint64_t shared = 0;
  for (uint64_t i = 0; i < num_args; i++) {
    const hal_kernel_arg_t* a = &args[i];
    size_t size;
    if (a->kind == HAL_KERNEL_ARG_BUFFER) {
      pointers[count] = DEVPTR(a->value);
      params[count] = &pointers[count];
      size = sizeof(CUdeviceptr);
    } else if (a->kind == HAL_KERNEL_ARG_BYTES) {
      if (a->value == NULL || a->size == 0) {
        return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s' argument %llu: BYTES without a value", k->name,
                       (unsigned long long)i);
      }
      params[count] = (void*)a->value;  // The driver copies the values during cuLaunchKernel.
      size = (size_t)a->size;
    } else if (a->kind == HAL_KERNEL_ARG_LOCAL) {
      shared += a->size;
      continue;
    } else {
      return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s': argument %llu has unknown kind %d", k->name,
                     (unsigned long long)i, (int)a->kind);
    }
    if (k->num_params >= 0 && count < k->num_params && k->param_sizes[count] != size) {
      return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s' argument %llu: parameter %d takes %zu bytes, the "
                     "argument gives %zu (a BUFFER is one 8-byte device pointer)", k->name, (unsigned long long)i,
                     count, k->param_sizes[count], size);
    }
    count++;
  }
  if (k->num_params >= 0 && count != k->num_params) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s' has %d parameters; the %llu arguments given fill %d "
                   "(LOCAL arguments fill none: they size the dynamic shared memory)", k->name, k->num_params,
                   (unsigned long long)num_args, count);
  }
  if (global[0] == 0 || global[1] == 0 || global[2] == 0) return cu_ok();  // Nothing to run.
  uint64_t block[3] = {1, 1, 1};
  if (local) {
    block[0] = local[0], block[1] = local[1], block[2] = local[2];
    if (block[0] == 0 || block[1] == 0 || block[2] == 0) {
      return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s': a work-group size of 0", k->name);
    }
  } else {
    const uint64_t limit = k->max_threads > 0 && k->max_threads < 256 ? (uint64_t)k->max_threads : 256;
    block[0] = global[0] < limit ? global[0] : limit;
  }
  uint64_t grid[3];
  for (int i = 0; i < 3; i++) grid[i] = (global[i] + block[i] - 1) / block[i];
  if (grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535 || block[0] * block[1] * block[2] > 1024 ||
      shared > 0xffffffffu) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: kernel '%s': grid %llu x %llu x %llu of blocks %llu x %llu x %llu "
                   "(%llu bytes shared) exceeds CUDA's limits", k->name, (unsigned long long)grid[0],
                   (unsigned long long)grid[1], (unsigned long long)grid[2], (unsigned long long)block[0],
                   (unsigned long long)block[1], (unsigned long long)block[2], (unsigned long long)shared);
  }
  CUresult r = g_cu.cuLaunchKernel(k->function, (unsigned)grid[0], (unsigned)grid[1], (unsigned)grid[2],
                                   (unsigned)block[0], (unsigned)block[1], (unsigned)block[2], (unsigned)shared,
                                   s->stream, count ? params : NULL, NULL);
  if (r != CUDA_SUCCESS) return cu_error(r, "cuLaunchKernel", "kernel '%s'", k->name);
  return cu_ok();
}

// ======================================================================================================
// 7. The table
// ======================================================================================================

static hal_plugin_api_t g_api = {
    .struct_size = sizeof(hal_plugin_api_t),
    .abi_major = HAL_ABI_VERSION_MAJOR,
    .abi_minor = HAL_ABI_VERSION_MINOR,
    .name = "cuda",
    .version = HAL_PLUGIN_VERSION,
    .initialize = cu_initialize,
    .shutdown = cu_shutdown,
    .get_last_error = cu_get_last_error,
    .device_count = cu_device_count,
    .device_get_properties = cu_get_properties,
    .device_get_memory_info = cu_get_memory_info,
    .memory_allocate = cu_memory_allocate,
    .memory_free = cu_memory_free,
    .stream_create = cu_stream_create,
    .stream_destroy = cu_stream_destroy,
    .stream_synchronize = cu_stream_synchronize,
    .stream_query = cu_stream_query,
    .stream_wait_event = cu_stream_wait_event,
    .event_create = cu_event_create,
    .event_destroy = cu_event_destroy,
    .event_record = cu_event_record,
    .event_synchronize = cu_event_synchronize,
    .event_query = cu_event_query,
    .event_elapsed_time = cu_event_elapsed_time,
    .memcpy_h2d_async = cu_h2d,
    .memcpy_d2h_async = cu_d2h,
    .memcpy_d2d_async = cu_d2d,
    .host_allocate = cu_host_allocate,
    .host_free = cu_host_free,
    .memcpy_peer_async = cu_peer,
    .memset_async = cu_memset,
    .launch_host_func = cu_launch_host_func,
    .op_list = cu_op_list,
    .op_launch = cu_op_launch,
    .program_create = cu_program_create,
    .program_destroy = cu_program_destroy,
    .kernel_create = cu_kernel_create,
    .kernel_destroy = cu_kernel_destroy,
    .kernel_launch = cu_kernel_launch,
    .extensions = &g_topology.base,  // ABI 1.2
};

// The collective entries are in the table only when NCCL can be loaded (collective.h: a plugin without
// collectives leaves them all NULL, and HAL bridges its devices through the host). Probing is a dlopen of the
// library: no device is touched.
static pthread_once_t g_api_once = PTHREAD_ONCE_INIT;
static void fill_api(void) {
  if (cu_nccl_probe()) cu_collectives_fill(&g_api);
}

HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) {
  pthread_once(&g_api_once, fill_api);
  return &g_api;
}
