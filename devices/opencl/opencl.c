// opencl: a HAL plugin on any OpenCL runtime (pocl on CPUs in CI; a GPU's OpenCL driver where there is one).
//
// Read top to bottom:
//   1. the error model, and OpenCL errors named in one place;
//   2. loading OpenCL at run time: the ICD loader (libOpenCL.so.1, or $HAL_OPENCL_LIBRARY) through dlopen and a
//      table of entry points (cl_api.h); nothing is linked. No library, no platform or no device: zero devices;
//   3. devices: every device of every platform, one context per platform;
//   4. memory: each allocation is a cl_mem; the device pointer handed out is an address in a range reserved
//      PROT_NONE for the device (never touched, so a host dereference faults instead of corrupting memory),
//      so base + offset arithmetic works as memory.h promises; every entry resolves a pointer to (buffer,
//      offset) and refuses ranges outside one live allocation;
//   5. streams (in-order command queues with profiling), events (markers), the sticky-error rule, copies,
//      fills and host functions;
//   6. programs and kernels ("opencl-c" source; "spirv" where the device takes IL);
//   7. the table. The operators (kernel.h) are in ops.c and its family files (ops.h).
//
// Memory is not host-addressable and not mappable: OpenCL's map semantics (a mapped region must be unmapped
// before the device uses it) do not give memory.h's aliasing mapping, so the host reaches device memory only
// through copies, as with a discrete accelerator. The device is real, not emulated.
//
// Configuration (initialize's config, else $HAL_OPENCL_DEVICES): unused for now; $HAL_OPENCL_LIBRARY names the
// OpenCL library to load; HAL_OPENCL_DEBUG=1 prints why there are zero devices to stderr.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "opencl.h"

// ======================================================================================================
// 1. Error model
// ======================================================================================================

static _Thread_local char t_message[4096];
static _Thread_local int32_t t_native;

hal_status_t ocl_ok(void) {
  t_message[0] = '\0';
  t_native = 0;
  return HAL_STATUS_OK;
}

hal_status_t ocl_fail(hal_status_t status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(t_message, sizeof(t_message), format, args);
  va_end(args);
  t_native = 0;
  return status;
}

const char* ocl_error_name(cl_int err) {
  switch (err) {
#define NAME(code, name) \
  case code: return name;
    NAME(0, "CL_SUCCESS") NAME(-1, "CL_DEVICE_NOT_FOUND") NAME(-2, "CL_DEVICE_NOT_AVAILABLE")
    NAME(-3, "CL_COMPILER_NOT_AVAILABLE") NAME(-4, "CL_MEM_OBJECT_ALLOCATION_FAILURE")
    NAME(-5, "CL_OUT_OF_RESOURCES") NAME(-6, "CL_OUT_OF_HOST_MEMORY") NAME(-7, "CL_PROFILING_INFO_NOT_AVAILABLE")
    NAME(-8, "CL_MEM_COPY_OVERLAP") NAME(-11, "CL_BUILD_PROGRAM_FAILURE") NAME(-12, "CL_MAP_FAILURE")
    NAME(-13, "CL_MISALIGNED_SUB_BUFFER_OFFSET") NAME(-14, "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST")
    NAME(-30, "CL_INVALID_VALUE") NAME(-31, "CL_INVALID_DEVICE_TYPE") NAME(-32, "CL_INVALID_PLATFORM")
    NAME(-33, "CL_INVALID_DEVICE") NAME(-34, "CL_INVALID_CONTEXT") NAME(-35, "CL_INVALID_QUEUE_PROPERTIES")
    NAME(-36, "CL_INVALID_COMMAND_QUEUE") NAME(-37, "CL_INVALID_HOST_PTR") NAME(-38, "CL_INVALID_MEM_OBJECT")
    NAME(-42, "CL_INVALID_BINARY") NAME(-43, "CL_INVALID_BUILD_OPTIONS") NAME(-44, "CL_INVALID_PROGRAM")
    NAME(-45, "CL_INVALID_PROGRAM_EXECUTABLE") NAME(-46, "CL_INVALID_KERNEL_NAME")
    NAME(-47, "CL_INVALID_KERNEL_DEFINITION") NAME(-48, "CL_INVALID_KERNEL") NAME(-49, "CL_INVALID_ARG_INDEX")
    NAME(-50, "CL_INVALID_ARG_VALUE") NAME(-51, "CL_INVALID_ARG_SIZE") NAME(-52, "CL_INVALID_KERNEL_ARGS")
    NAME(-53, "CL_INVALID_WORK_DIMENSION") NAME(-54, "CL_INVALID_WORK_GROUP_SIZE")
    NAME(-55, "CL_INVALID_WORK_ITEM_SIZE") NAME(-56, "CL_INVALID_GLOBAL_OFFSET")
    NAME(-57, "CL_INVALID_EVENT_WAIT_LIST") NAME(-58, "CL_INVALID_EVENT") NAME(-59, "CL_INVALID_OPERATION")
    NAME(-61, "CL_INVALID_BUFFER_SIZE") NAME(-63, "CL_INVALID_GLOBAL_WORK_SIZE")
    NAME(-1001, "CL_PLATFORM_NOT_FOUND_KHR")
#undef NAME
    default: return "CL_<unknown error>";
  }
}

hal_status_t ocl_cl_fail(cl_int err, const char* call, const char* detail) {
  hal_status_t status = HAL_STATUS_DEVICE_ERROR;
  if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_HOST_MEMORY) status = HAL_STATUS_OUT_OF_MEMORY;
  if (err == CL_BUILD_PROGRAM_FAILURE || (err <= -30 && err >= -63)) status = HAL_STATUS_INVALID_ARGUMENT;
  snprintf(t_message, sizeof(t_message), "opencl: %s: %s (%d)%s%s", call, ocl_error_name(err), (int)err,
           detail && *detail ? ": " : "", detail ? detail : "");
  t_native = err;
  return status;
}

static size_t ocl_get_last_error(char* buffer, size_t capacity, int32_t* out_native) {
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
// 2. Loading OpenCL at run time
// ======================================================================================================

hal_cl_api_t g_cl;
static void* g_library;
static char g_unavailable[512];  // Why there are zero devices ("" when there are some).

static void unavailable(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(g_unavailable, sizeof(g_unavailable), format, args);
  va_end(args);
  const char* debug = getenv("HAL_OPENCL_DEBUG");
  if (debug && *debug && strcmp(debug, "0") != 0) fprintf(stderr, "hal opencl: no devices: %s\n", g_unavailable);
}

// 0 when every required entry point loaded; else names the first missing one.
static int load_library(void) {
  const char* path = getenv("HAL_OPENCL_LIBRARY");
  const char* candidates[] = {path && *path ? path : "libOpenCL.so.1", path && *path ? NULL : "libOpenCL.so"};
  for (size_t i = 0; i < 2 && g_library == NULL && candidates[i]; i++) {
    g_library = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
  }
  if (g_library == NULL) {
    unavailable("%s not found (%s)", candidates[0], dlerror());
    return -1;
  }
#define LOAD(ret, name, args)                                      \
  g_cl.name = (ret(*) args)dlsym(g_library, #name);                \
  if (g_cl.name == NULL) {                                         \
    unavailable("%s lacks the entry point %s", candidates[0], #name); \
    return -1;                                                     \
  }
  HAL_CL_FUNCTIONS(LOAD)
#undef LOAD
#define LOAD_OPTIONAL(ret, name, args) g_cl.name = (ret(*) args)dlsym(g_library, #name);
  HAL_CL_OPTIONAL_FUNCTIONS(LOAD_OPTIONAL)
#undef LOAD_OPTIONAL
  return 0;
}

// ======================================================================================================
// 3. Devices
// ======================================================================================================

ocl_device_t* g_devices;
int32_t g_device_count;
static int g_initialized;

hal_status_t ocl_check_device(int32_t device) {
  if (!g_initialized) return ocl_fail(HAL_STATUS_UNAVAILABLE, "opencl: the plugin is not initialized");
  if (device < 0 || device >= g_device_count) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: no device %d (%d devices)", (int)device, (int)g_device_count);
  }
  return HAL_STATUS_OK;
}

static void info_string(cl_device_id id, cl_device_info what, char* out, size_t capacity) {
  out[0] = '\0';
  if (g_cl.clGetDeviceInfo(id, what, capacity, out, NULL) != CL_SUCCESS) out[0] = '\0';
  out[capacity - 1] = '\0';
}

static cl_ulong info_ulong(cl_device_id id, cl_device_info what) {
  cl_ulong v = 0;
  return g_cl.clGetDeviceInfo(id, what, sizeof(v), &v, NULL) == CL_SUCCESS ? v : 0;
}

static cl_uint info_uint(cl_device_id id, cl_device_info what) {
  cl_uint v = 0;
  return g_cl.clGetDeviceInfo(id, what, sizeof(v), &v, NULL) == CL_SUCCESS ? v : 0;
}

// The address range a device's pointers come from: 4x its memory (allocations are never packed tighter than
// their rounding), at least 64 GiB; reserved, never committed.
static int reserve_range(ocl_device_t* d) {
  uint64_t size = d->capacity * 4;
  if (size < (64ull << 30)) size = 64ull << 30;
  void* p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return -1;
  d->range = (uintptr_t)p;
  d->range_size = size;
  d->next = 0;
  return 0;
}

static void discover(void) {
  cl_uint platform_count = 0;
  cl_int err = g_cl.clGetPlatformIDs(0, NULL, &platform_count);
  if (err != CL_SUCCESS || platform_count == 0) {
    unavailable("no OpenCL platform (clGetPlatformIDs: %s)", err == CL_SUCCESS ? "0 platforms" : ocl_error_name(err));
    return;
  }
  cl_platform_id* platforms = calloc(platform_count, sizeof(cl_platform_id));
  g_cl.clGetPlatformIDs(platform_count, platforms, NULL);
  for (cl_uint p = 0; p < platform_count; p++) {
    cl_uint n = 0;
    if (g_cl.clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, NULL, &n) != CL_SUCCESS || n == 0) continue;
    cl_device_id* ids = calloc(n, sizeof(cl_device_id));
    g_cl.clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, n, ids, NULL);
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platforms[p], 0};
    cl_context context = g_cl.clCreateContext(props, n, ids, NULL, NULL, &err);
    if (context == NULL || err != CL_SUCCESS) {
      unavailable("clCreateContext on platform %u failed: %s", p, ocl_error_name(err));
      free(ids);
      continue;
    }
    ocl_device_t* grown = realloc(g_devices, (g_device_count + n) * sizeof(ocl_device_t));
    if (grown == NULL) {
      g_cl.clReleaseContext(context);
      free(ids);
      break;
    }
    g_devices = grown;
    for (cl_uint i = 0; i < n; i++) {
      ocl_device_t* d = &g_devices[g_device_count];
      memset(d, 0, sizeof(*d));
      d->platform = platforms[p];
      d->id = ids[i];
      d->context = context;
      info_string(ids[i], CL_DEVICE_NAME, d->name, sizeof(d->name));
      info_string(ids[i], CL_DEVICE_VENDOR, d->vendor, sizeof(d->vendor));
      cl_ulong type = info_ulong(ids[i], CL_DEVICE_TYPE);
      d->kind = (type & CL_DEVICE_TYPE_GPU) ? HAL_DEVICE_KIND_GPU
                : (type & CL_DEVICE_TYPE_ACCELERATOR) ? HAL_DEVICE_KIND_NPU
                : (type & CL_DEVICE_TYPE_CPU) ? HAL_DEVICE_KIND_CPU : HAL_DEVICE_KIND_OTHER;
      d->capacity = info_ulong(ids[i], CL_DEVICE_GLOBAL_MEM_SIZE);
      d->max_alloc = info_ulong(ids[i], CL_DEVICE_MAX_MEM_ALLOC_SIZE);
      d->compute_units = info_uint(ids[i], CL_DEVICE_MAX_COMPUTE_UNITS);
      d->clock_mhz = info_uint(ids[i], CL_DEVICE_MAX_CLOCK_FREQUENCY);
      d->fp64 = info_ulong(ids[i], CL_DEVICE_DOUBLE_FP_CONFIG) != 0;
      char il[256];
      info_string(ids[i], CL_DEVICE_IL_VERSION, il, sizeof(il));
      d->has_il = il[0] != '\0' && g_cl.clCreateProgramWithIL != NULL;
      pthread_mutex_init(&d->mutex, NULL);
      if (d->capacity == 0 || reserve_range(d) != 0) {
        unavailable("device %u of platform %u: no memory size or no address range", i, p);
        continue;
      }
      g_device_count++;
    }
    free(ids);
  }
  free(platforms);
  if (g_device_count == 0 && g_unavailable[0] == '\0') unavailable("the OpenCL platforms have no devices");
}

static hal_status_t ocl_initialize(const hal_plugin_init_args_t* args) {
  (void)args;
  g_unavailable[0] = '\0';
  g_device_count = 0;
  if (load_library() == 0) discover();
  g_initialized = 1;
  return ocl_ok();  // Zero devices is not an error: this machine has no OpenCL.
}

static void ocl_shutdown(void) {
  for (int32_t i = 0; i < g_device_count; i++) {
    ocl_device_t* d = &g_devices[i];
    ocl_ops_release(d);
    for (size_t a = 0; a < d->allocation_count; a++) g_cl.clReleaseMemObject(d->allocations[a].mem);
    free(d->allocations);
    munmap((void*)d->range, d->range_size);
    // Devices of one platform share a context: release it with the platform's last device.
    if (i + 1 == g_device_count || g_devices[i + 1].context != d->context) g_cl.clReleaseContext(d->context);
  }
  free(g_devices);
  g_devices = NULL;
  g_device_count = 0;
  g_initialized = 0;
}

static hal_status_t ocl_device_count(int32_t* out_count) {
  if (out_count == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: device_count: NULL output");
  *out_count = g_initialized ? g_device_count : 0;
  return ocl_ok();
}

static hal_status_t ocl_get_properties(int32_t device, hal_device_properties_t* out) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL || out->struct_size < offsetof(hal_device_properties_t, name)) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: device_get_properties: NULL or too small a struct");
  }
  const ocl_device_t* d = &g_devices[device];
  hal_device_properties_t p;
  memset(&p, 0, sizeof(p));
  snprintf(p.name, sizeof(p.name), "%s", d->name);
  snprintf(p.vendor, sizeof(p.vendor), "%s", d->vendor);
  p.kind = d->kind;
  p.flags = 0;  // Not host-addressable, not mappable (see the top), not emulated.
  p.total_memory_bytes = d->capacity;
  const size_t n = out->struct_size < sizeof(p) ? out->struct_size : sizeof(p);
  memcpy((char*)out + sizeof(size_t), (const char*)&p + sizeof(size_t), n - sizeof(size_t));
  return ocl_ok();
}

static hal_status_t ocl_get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_free == NULL || out_total == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: NULL output");
  ocl_device_t* d = &g_devices[device];
  pthread_mutex_lock(&d->mutex);
  *out_free = d->capacity > d->used ? d->capacity - d->used : 0;
  *out_total = d->capacity;
  pthread_mutex_unlock(&d->mutex);
  return ocl_ok();
}

// ======================================================================================================
// 4. Memory
// ======================================================================================================

#define ALIGNMENT 256u

// Index of the allocation containing |address|, or -1 (caller holds the device's mutex).
static ptrdiff_t find_allocation(const ocl_device_t* d, uintptr_t address) {
  size_t lo = 0, hi = d->allocation_count;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (d->allocations[mid].base + d->allocations[mid].size <= address) lo = mid + 1;
    else hi = mid;
  }
  if (lo < d->allocation_count && d->allocations[lo].base <= address) return (ptrdiff_t)lo;
  return -1;
}

hal_status_t ocl_resolve(int32_t device, const void* ptr, uint64_t size, cl_mem* out_mem, uint64_t* out_offset) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  ocl_device_t* d = &g_devices[device];
  uintptr_t address = (uintptr_t)ptr;
  pthread_mutex_lock(&d->mutex);
  ptrdiff_t i = find_allocation(d, address);
  ocl_allocation_t a = i >= 0 ? d->allocations[i] : (ocl_allocation_t){0};
  pthread_mutex_unlock(&d->mutex);
  if (i < 0) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: %p is not memory allocated on device %d", ptr, device);
  if (size > a.base + a.size - address) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT,
                    "opencl: %llu bytes at %p overrun its allocation (%llu bytes at %p) on device %d",
                    (unsigned long long)size, ptr, (unsigned long long)a.size, (void*)a.base, device);
  }
  *out_mem = a.mem;
  *out_offset = address - a.base;
  return HAL_STATUS_OK;
}

static hal_status_t ocl_memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ptr == NULL || size == 0) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: memory_allocate: size 0 or NULL output");
  ocl_device_t* d = &g_devices[device];
  if (size > d->max_alloc) {
    return ocl_fail(HAL_STATUS_OUT_OF_MEMORY,
                    "opencl: cannot allocate %llu bytes on device %d (%s): one buffer may hold at most %llu bytes "
                    "(CL_DEVICE_MAX_MEM_ALLOC_SIZE)", (unsigned long long)size, device, d->name,
                    (unsigned long long)d->max_alloc);
  }
  const uint64_t rounded = (size + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
  pthread_mutex_lock(&d->mutex);
  if (d->used + size > d->capacity) {
    const uint64_t used = d->used;
    pthread_mutex_unlock(&d->mutex);
    return ocl_fail(HAL_STATUS_OUT_OF_MEMORY,
                    "opencl: out of memory on device %d (%s): %llu bytes requested, %llu in use, capacity %llu",
                    device, d->name, (unsigned long long)size, (unsigned long long)used,
                    (unsigned long long)d->capacity);
  }
  if (d->next + rounded > d->range_size || d->allocation_count == d->allocation_capacity) {
    // Addresses are handed out in order and never reused, so the table stays sorted; when the range or the
    // table runs out, try growing the table (the range is 4x the memory: exhausting it takes many cycles).
    size_t capacity = d->allocation_capacity ? d->allocation_capacity * 2 : 64;
    ocl_allocation_t* grown = d->next + rounded <= d->range_size
                                  ? realloc(d->allocations, capacity * sizeof(ocl_allocation_t)) : NULL;
    if (grown == NULL) {
      pthread_mutex_unlock(&d->mutex);
      return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: device %d: out of device addresses or host memory for "
                      "the allocation table (%llu bytes requested)", device, (unsigned long long)size);
    }
    d->allocations = grown;
    d->allocation_capacity = capacity;
  }
  cl_int err = CL_SUCCESS;
  cl_mem mem = g_cl.clCreateBuffer(d->context, CL_MEM_READ_WRITE, size, NULL, &err);
  if (mem == NULL || err != CL_SUCCESS) {
    const uint64_t used = d->used;
    pthread_mutex_unlock(&d->mutex);
    char detail[256];
    snprintf(detail, sizeof(detail), "%llu bytes requested on device %d (%s), %llu in use, capacity %llu",
             (unsigned long long)size, device, d->name, (unsigned long long)used, (unsigned long long)d->capacity);
    status = ocl_cl_fail(err, "clCreateBuffer", detail);
    return status == HAL_STATUS_INVALID_ARGUMENT ? HAL_STATUS_OUT_OF_MEMORY : status;
  }
  const uintptr_t base = d->range + d->next;
  d->next += rounded;
  d->allocations[d->allocation_count++] = (ocl_allocation_t){base, size, mem};
  d->used += size;
  pthread_mutex_unlock(&d->mutex);
  *out_ptr = (void*)base;
  return ocl_ok();
}

static hal_status_t ocl_memory_free(int32_t device, void* ptr) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  ocl_device_t* d = &g_devices[device];
  pthread_mutex_lock(&d->mutex);
  ptrdiff_t i = find_allocation(d, (uintptr_t)ptr);
  if (i < 0 || d->allocations[i].base != (uintptr_t)ptr) {
    pthread_mutex_unlock(&d->mutex);
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: memory_free: %p is not an allocation of device %d%s", ptr,
                    device, i >= 0 ? " (it points inside one)" : "");
  }
  ocl_allocation_t a = d->allocations[i];
  memmove(&d->allocations[i], &d->allocations[i + 1], (d->allocation_count - i - 1) * sizeof(ocl_allocation_t));
  d->allocation_count--;
  d->used -= a.size;
  pthread_mutex_unlock(&d->mutex);
  g_cl.clReleaseMemObject(a.mem);
  return ocl_ok();
}

// ======================================================================================================
// 5. Streams, events, copies
// ======================================================================================================

#define STREAM_MAGIC 0x4f434c53u  // "OCLS"
#define EVENT_MAGIC 0x4f434c45u   // "OCLE"
#define MAX_PENDING 256

typedef struct host_call_t host_call_t;  // A host function on its way (launch_host_func).

typedef struct pending_t {
  cl_event event;
  const char* what;  // A string literal naming the command.
} pending_t;

struct hal_stream_s {
  uint32_t magic;
  int32_t device;
  cl_command_queue queue;
  pthread_mutex_t mutex;  // Guards the pending list.
  pending_t pending[MAX_PENDING];
  size_t pending_count;
  // The kernels' temporary memory, both counted in the device's memory in use: |scratch| a plain buffer
  // (ocl_stream_scratch), |temp| an allocation with a device address (ocl_stream_temp). |op| (recursive) is held
  // from the moment an operator takes either until it has queued its last kernel (ocl_stream_temp_done), so two
  // threads' operators on one stream never interleave their kernels over the same temporary memory.
  pthread_mutex_t op;
  cl_mem scratch;
  uint64_t scratch_size;
  void* temp;
  uint64_t temp_size;
  // The device-side fault word (ocl_stream_fault): an int that kernels checking their indices set, read back
  // at every synchronize (and idle query) once a kernel has been given it.
  cl_mem fault;
  int fault_used;
  // The host thread of launch_host_func (started by the first), and its queue of functions due to run.
  pthread_mutex_t host_mutex;
  pthread_cond_t host_cv;
  pthread_t host_thread;
  int host_started, host_stop;
  host_call_t* host_head;
  host_call_t* host_tail;
};

struct hal_event_s {
  uint32_t magic;
  int32_t device;
  uint32_t flags;
  pthread_mutex_t mutex;
  cl_event marker;  // The latest record, retained; NULL when never recorded.
};

static hal_status_t check_stream(hal_stream_t s) {
  if (s == NULL || s->magic != STREAM_MAGIC) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: not a stream of this plugin");
  return HAL_STATUS_OK;
}

hal_status_t ocl_stream_queue(hal_stream_t stream, cl_command_queue* out_queue, int32_t* out_device) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  *out_queue = stream->queue;
  *out_device = stream->device;
  return HAL_STATUS_OK;
}

hal_status_t ocl_stream_scratch(hal_stream_t stream, uint64_t size, cl_mem* out) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  ocl_device_t* d = &g_devices[stream->device];
  pthread_mutex_lock(&stream->op);
  if (stream->scratch_size < size) {
    // Commands queued with the old buffer hold their own reference to it: releasing it here is safe.
    const uint64_t grown = (size + (1u << 20) - 1) >> 20 << 20;  // Whole MiB, so it seldom grows again.
    pthread_mutex_lock(&d->mutex);
    const uint64_t used = d->used - stream->scratch_size;
    const int fits = grown <= d->max_alloc && used + grown <= d->capacity;
    pthread_mutex_unlock(&d->mutex);
    cl_int err = CL_SUCCESS;
    cl_mem mem = fits ? g_cl.clCreateBuffer(d->context, CL_MEM_READ_WRITE, grown, NULL, &err) : NULL;
    if (mem == NULL || err != CL_SUCCESS) {
      pthread_mutex_unlock(&stream->op);
      return ocl_fail(HAL_STATUS_OUT_OF_MEMORY,
                      "opencl: out of memory on device %d (%s) for %llu bytes of kernel scratch: %llu in use, "
                      "capacity %llu", stream->device, d->name, (unsigned long long)grown,
                      (unsigned long long)used, (unsigned long long)d->capacity);
    }
    if (stream->scratch) g_cl.clReleaseMemObject(stream->scratch);
    pthread_mutex_lock(&d->mutex);
    d->used = d->used - stream->scratch_size + grown;
    pthread_mutex_unlock(&d->mutex);
    stream->scratch = mem;
    stream->scratch_size = grown;
  }
  g_cl.clRetainMemObject(stream->scratch);
  *out = stream->scratch;
  return HAL_STATUS_OK;
}

hal_status_t ocl_stream_temp(hal_stream_t stream, uint64_t size, void** out) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&stream->op);
  if (stream->temp_size < size) {
    // As for the scratch: kernels queued with the old allocation hold its buffer until they complete.
    const uint64_t grown = (size + (1u << 20) - 1) >> 20 << 20;
    if (stream->temp) ocl_memory_free(stream->device, stream->temp);
    stream->temp = NULL;
    stream->temp_size = 0;
    if ((status = ocl_memory_allocate(stream->device, grown, &stream->temp)) != HAL_STATUS_OK) {
      pthread_mutex_unlock(&stream->op);
      return status;
    }
    stream->temp_size = grown;
  }
  *out = stream->temp;
  return HAL_STATUS_OK;
}

void ocl_stream_temp_done(hal_stream_t stream) { pthread_mutex_unlock(&stream->op); }

static cl_int status_of(cl_event e) {
  cl_int s = CL_COMPLETE;
  cl_int err = g_cl.clGetEventInfo(e, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(s), &s, NULL);
  return err == CL_SUCCESS ? s : err;
}

// Takes the first failure among the finished commands of |s| (releasing them): OK, or the failure. Unfinished
// commands stay (all of them when |all| is 0 and one has not finished: order is kept).
static hal_status_t collect(hal_stream_t s, int all) {
  hal_status_t status = HAL_STATUS_OK;
  char message[512] = "";
  size_t kept = 0;
  for (size_t i = 0; i < s->pending_count; i++) {
    cl_int st = status_of(s->pending[i].event);
    if (st > CL_COMPLETE && !all) {
      s->pending[kept++] = s->pending[i];
      continue;
    }
    if (st < 0 && status == HAL_STATUS_OK) {
      status = HAL_STATUS_DEVICE_ERROR;
      snprintf(message, sizeof(message), "opencl: a queued %s failed on device %d: %s (%d)", s->pending[i].what,
               s->device, ocl_error_name(st), (int)st);
    }
    g_cl.clReleaseEvent(s->pending[i].event);
  }
  s->pending_count = kept;
  if (all && s->fault_used) {  // The queue is idle: the word is read (and cleared) in place.
    cl_int word = 0;
    const cl_int zero = 0;
    if (g_cl.clEnqueueReadBuffer(s->queue, s->fault, CL_TRUE, 0, sizeof(word), &word, 0, NULL, NULL) == CL_SUCCESS &&
        word != 0) {
      g_cl.clEnqueueWriteBuffer(s->queue, s->fault, CL_TRUE, 0, sizeof(zero), &zero, 0, NULL, NULL);
      if (status == HAL_STATUS_OK) {
        status = HAL_STATUS_DEVICE_ERROR;
        snprintf(message, sizeof(message), "opencl: a queued %s on device %d read an index out of range (checked on "
                 "the device; what the call wrote is undefined)", ocl_op_name(word), s->device);
      }
    }
  }
  if (status != HAL_STATUS_OK) {
    ocl_fail(status, "%s", message);
    t_native = -1;
  }
  return status;
}

hal_status_t ocl_stream_fault(hal_stream_t s, cl_mem* out) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&s->mutex);
  if (s->fault == NULL) {
    cl_int err = CL_SUCCESS, zero = 0;
    s->fault = g_cl.clCreateBuffer(g_devices[s->device].context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                   sizeof(zero), &zero, &err);
    if (s->fault == NULL || err != CL_SUCCESS) {
      s->fault = NULL;
      pthread_mutex_unlock(&s->mutex);
      return ocl_cl_fail(err, "clCreateBuffer", "the stream's fault word");
    }
  }
  s->fault_used = 1;  // Never reset: a kernel given the word may still be on its way to the queue.
  *out = s->fault;
  pthread_mutex_unlock(&s->mutex);
  return HAL_STATUS_OK;
}

void ocl_stream_track(hal_stream_t s, cl_event event, const char* what) {
  if (event == NULL) return;
  pthread_mutex_lock(&s->mutex);
  if (s->pending_count == MAX_PENDING) {
    // Drop the finished successes; a failure among them stays for the next synchronize to report.
    size_t kept = 0;
    for (size_t i = 0; i < s->pending_count; i++) {
      if (status_of(s->pending[i].event) == CL_COMPLETE) {
        g_cl.clReleaseEvent(s->pending[i].event);
      } else {
        s->pending[kept++] = s->pending[i];
      }
    }
    s->pending_count = kept;
    if (kept == MAX_PENDING) {  // All still running: wait for the oldest.
      g_cl.clWaitForEvents(1, &s->pending[0].event);
      if (status_of(s->pending[0].event) == CL_COMPLETE) {
        g_cl.clReleaseEvent(s->pending[0].event);
        memmove(&s->pending[0], &s->pending[1], (MAX_PENDING - 1) * sizeof(pending_t));
        s->pending_count--;
      }
    }
  }
  if (s->pending_count < MAX_PENDING) {
    s->pending[s->pending_count++] = (pending_t){event, what};
  } else {
    g_cl.clReleaseEvent(event);  // A failure fills the list: it is reported already.
  }
  pthread_mutex_unlock(&s->mutex);
}

static hal_status_t ocl_stream_create(int32_t device, hal_stream_t* out) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: stream_create: NULL output");
  hal_stream_t s = calloc(1, sizeof(*s));
  if (s == NULL) return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: stream_create: out of host memory");
  cl_int err = CL_SUCCESS;
  s->queue = g_cl.clCreateCommandQueue(g_devices[device].context, g_devices[device].id, CL_QUEUE_PROFILING_ENABLE, &err);
  if (s->queue == NULL || err != CL_SUCCESS) {
    free(s);
    return ocl_cl_fail(err, "clCreateCommandQueue", NULL);
  }
  s->magic = STREAM_MAGIC;
  s->device = device;
  pthread_mutex_init(&s->mutex, NULL);
  pthread_mutexattr_t recursive;
  pthread_mutexattr_init(&recursive);
  pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&s->op, &recursive);
  pthread_mutexattr_destroy(&recursive);
  pthread_mutex_init(&s->host_mutex, NULL);
  pthread_cond_init(&s->host_cv, NULL);
  *out = s;
  return ocl_ok();
}

static hal_status_t ocl_stream_synchronize(hal_stream_t s) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  cl_int err = g_cl.clFinish(s->queue);
  if (err != CL_SUCCESS) return ocl_cl_fail(err, "clFinish", NULL);
  pthread_mutex_lock(&s->mutex);
  status = collect(s, 1);
  pthread_mutex_unlock(&s->mutex);
  return status == HAL_STATUS_OK ? ocl_ok() : status;
}

static hal_status_t ocl_stream_destroy(hal_stream_t s) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  g_cl.clFinish(s->queue);  // Its host functions have run too: the barriers after them waited for them.
  pthread_mutex_lock(&s->host_mutex);
  s->host_stop = 1;
  pthread_cond_signal(&s->host_cv);
  const int joined = s->host_started;
  pthread_mutex_unlock(&s->host_mutex);
  if (joined) pthread_join(s->host_thread, NULL);
  for (size_t i = 0; i < s->pending_count; i++) g_cl.clReleaseEvent(s->pending[i].event);
  g_cl.clReleaseCommandQueue(s->queue);
  if (s->scratch) {
    g_cl.clReleaseMemObject(s->scratch);
    pthread_mutex_lock(&g_devices[s->device].mutex);
    g_devices[s->device].used -= s->scratch_size;
    pthread_mutex_unlock(&g_devices[s->device].mutex);
  }
  if (s->temp) ocl_memory_free(s->device, s->temp);
  if (s->fault) g_cl.clReleaseMemObject(s->fault);
  s->magic = 0;
  pthread_mutex_destroy(&s->mutex);
  pthread_mutex_destroy(&s->op);
  pthread_mutex_destroy(&s->host_mutex);
  pthread_cond_destroy(&s->host_cv);
  free(s);
  return ocl_ok();
}

static hal_status_t ocl_stream_query(hal_stream_t s) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  g_cl.clFlush(s->queue);
  pthread_mutex_lock(&s->mutex);
  int busy = 0;
  for (size_t i = 0; i < s->pending_count && !busy; i++) busy = status_of(s->pending[i].event) > CL_COMPLETE;
  status = busy ? HAL_STATUS_NOT_READY : collect(s, 1);
  pthread_mutex_unlock(&s->mutex);
  if (status == HAL_STATUS_NOT_READY) return ocl_fail(HAL_STATUS_NOT_READY, "opencl: the stream has work queued");
  return status == HAL_STATUS_OK ? ocl_ok() : status;
}

static hal_status_t check_event(hal_event_t e) {
  if (e == NULL || e->magic != EVENT_MAGIC) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: not an event of this plugin");
  return HAL_STATUS_OK;
}

// The event's latest marker, retained for the caller (NULL: never recorded).
static cl_event marker_of(hal_event_t e) {
  pthread_mutex_lock(&e->mutex);
  cl_event m = e->marker;
  if (m) g_cl.clRetainEvent(m);
  pthread_mutex_unlock(&e->mutex);
  return m;
}

static hal_status_t ocl_stream_wait_event(hal_stream_t s, hal_event_t e) {
  hal_status_t status = check_stream(s);
  if (status == HAL_STATUS_OK) status = check_event(e);
  if (status != HAL_STATUS_OK) return status;
  cl_event m = marker_of(e);
  if (m == NULL) return ocl_ok();
  cl_int err = CL_SUCCESS;
  if (g_devices[e->device].context == g_devices[s->device].context) {
    cl_event barrier = NULL;
    err = g_cl.clEnqueueBarrierWithWaitList(s->queue, 1, &m, &barrier);
    if (err == CL_SUCCESS) ocl_stream_track(s, barrier, "stream_wait_event");
  } else {
    err = g_cl.clWaitForEvents(1, &m);  // Another platform's event: order through the host.
  }
  g_cl.clReleaseEvent(m);
  return err == CL_SUCCESS ? ocl_ok() : ocl_cl_fail(err, "clEnqueueBarrierWithWaitList", NULL);
}

static hal_status_t ocl_event_create(int32_t device, uint32_t flags, hal_event_t* out) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: event_create: NULL output");
  hal_event_t e = calloc(1, sizeof(*e));
  if (e == NULL) return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: event_create: out of host memory");
  e->magic = EVENT_MAGIC;
  e->device = device;
  e->flags = flags;
  pthread_mutex_init(&e->mutex, NULL);
  *out = e;
  return ocl_ok();
}

static hal_status_t ocl_event_destroy(hal_event_t e) {
  hal_status_t status = check_event(e);
  if (status != HAL_STATUS_OK) return status;
  if (e->marker) g_cl.clReleaseEvent(e->marker);  // A stream's barrier on it holds its own reference.
  e->magic = 0;
  pthread_mutex_destroy(&e->mutex);
  free(e);
  return ocl_ok();
}

static hal_status_t ocl_event_record(hal_event_t e, hal_stream_t s) {
  hal_status_t status = check_event(e);
  if (status == HAL_STATUS_OK) status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  cl_event m = NULL;
  cl_int err = g_cl.clEnqueueMarkerWithWaitList(s->queue, 0, NULL, &m);
  if (err != CL_SUCCESS) return ocl_cl_fail(err, "clEnqueueMarkerWithWaitList", NULL);
  g_cl.clFlush(s->queue);
  pthread_mutex_lock(&e->mutex);
  cl_event old = e->marker;
  e->marker = m;
  pthread_mutex_unlock(&e->mutex);
  if (old) g_cl.clReleaseEvent(old);
  return ocl_ok();
}

static hal_status_t ocl_event_synchronize(hal_event_t e) {
  hal_status_t status = check_event(e);
  if (status != HAL_STATUS_OK) return status;
  cl_event m = marker_of(e);
  if (m == NULL) return ocl_ok();
  g_cl.clWaitForEvents(1, &m);
  cl_int st = status_of(m);
  g_cl.clReleaseEvent(m);
  if (st < 0) {
    return ocl_fail(HAL_STATUS_DEVICE_ERROR, "opencl: work before the event failed on device %d: %s (%d)", e->device,
                    ocl_error_name(st), (int)st);
  }
  return ocl_ok();
}

static hal_status_t ocl_event_query(hal_event_t e) {
  hal_status_t status = check_event(e);
  if (status != HAL_STATUS_OK) return status;
  cl_event m = marker_of(e);
  if (m == NULL) return ocl_ok();
  cl_int st = status_of(m);
  g_cl.clReleaseEvent(m);
  if (st > CL_COMPLETE) return ocl_fail(HAL_STATUS_NOT_READY, "opencl: the event has not completed");
  return ocl_ok();
}

static hal_status_t ocl_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  hal_status_t status = check_event(start);
  if (status == HAL_STATUS_OK) status = check_event(end);
  if (status != HAL_STATUS_OK) return status;
  if (out_ms == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: event_elapsed_time: NULL output");
  if (!(start->flags & HAL_EVENT_FLAG_TIMING) || !(end->flags & HAL_EVENT_FLAG_TIMING)) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: event_elapsed_time: both events need HAL_EVENT_FLAG_TIMING");
  }
  cl_event a = marker_of(start), b = marker_of(end);
  if (a == NULL || b == NULL) {
    if (a) g_cl.clReleaseEvent(a);
    if (b) g_cl.clReleaseEvent(b);
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: event_elapsed_time: an event was never recorded");
  }
  cl_int sa = status_of(a), sb = status_of(b);
  cl_ulong ta = 0, tb = 0;
  cl_int err = CL_SUCCESS;
  if (sa == CL_COMPLETE && sb == CL_COMPLETE) {
    err = g_cl.clGetEventProfilingInfo(a, CL_PROFILING_COMMAND_END, sizeof(ta), &ta, NULL);
    if (err == CL_SUCCESS) err = g_cl.clGetEventProfilingInfo(b, CL_PROFILING_COMMAND_END, sizeof(tb), &tb, NULL);
  }
  g_cl.clReleaseEvent(a);
  g_cl.clReleaseEvent(b);
  if (sa > CL_COMPLETE || sb > CL_COMPLETE) return ocl_fail(HAL_STATUS_NOT_READY, "opencl: an event has not completed");
  if (sa < 0 || sb < 0) return ocl_fail(HAL_STATUS_DEVICE_ERROR, "opencl: work before an event failed");
  if (err != CL_SUCCESS) return ocl_cl_fail(err, "clGetEventProfilingInfo", NULL);
  *out_ms = (float)(((double)tb - (double)ta) / 1e6);
  return ocl_ok();
}

// Copies. |dst_device| / |src_device| < 0: host memory.
static hal_status_t copy(hal_stream_t s, const char* entry, void* dst, int32_t dst_device, const void* src,
                         int32_t src_device, uint64_t size) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (size > 0 && (dst == NULL || src == NULL)) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: %s: NULL pointer", entry);
  cl_mem dmem = NULL, smem = NULL;
  uint64_t doff = 0, soff = 0;
  if (size > 0 && dst_device >= 0 && (status = ocl_resolve(dst_device, dst, size, &dmem, &doff)) != HAL_STATUS_OK) return status;
  if (size > 0 && src_device >= 0 && (status = ocl_resolve(src_device, src, size, &smem, &soff)) != HAL_STATUS_OK) return status;
  cl_event ev = NULL;
  cl_int err;
  const char* call;
  if (size == 0) {
    call = "clEnqueueMarkerWithWaitList";
    err = g_cl.clEnqueueMarkerWithWaitList(s->queue, 0, NULL, &ev);
  } else if (dst_device < 0) {
    call = "clEnqueueReadBuffer";
    err = g_cl.clEnqueueReadBuffer(s->queue, smem, CL_FALSE, soff, size, dst, 0, NULL, &ev);
  } else if (src_device < 0) {
    call = "clEnqueueWriteBuffer";
    err = g_cl.clEnqueueWriteBuffer(s->queue, dmem, CL_FALSE, doff, size, src, 0, NULL, &ev);
  } else {
    call = "clEnqueueCopyBuffer";
    err = g_cl.clEnqueueCopyBuffer(s->queue, smem, dmem, soff, doff, size, 0, NULL, &ev);
  }
  if (err != CL_SUCCESS) return ocl_cl_fail(err, call, entry);
  ocl_stream_track(s, ev, entry);
  g_cl.clFlush(s->queue);
  return ocl_ok();
}

static hal_status_t ocl_h2d(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  if (check_stream(s) != HAL_STATUS_OK) return HAL_STATUS_INVALID_ARGUMENT;
  return copy(s, "memcpy_h2d_async", dst, s->device, src, -1, size);
}
static hal_status_t ocl_d2h(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  if (check_stream(s) != HAL_STATUS_OK) return HAL_STATUS_INVALID_ARGUMENT;
  return copy(s, "memcpy_d2h_async", dst, -1, src, s->device, size);
}
static hal_status_t ocl_d2d(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  if (check_stream(s) != HAL_STATUS_OK) return HAL_STATUS_INVALID_ARGUMENT;
  return copy(s, "memcpy_d2d_async", dst, s->device, src, s->device, size);
}
static hal_status_t ocl_peer(hal_stream_t s, void* dst, int32_t dst_device, const void* src, int32_t src_device,
                             uint64_t size) {
  hal_status_t status = check_stream(s);
  if (status == HAL_STATUS_OK) status = ocl_check_device(dst_device);
  if (status == HAL_STATUS_OK) status = ocl_check_device(src_device);
  if (status != HAL_STATUS_OK) return status;
  if (s->device != dst_device && s->device != src_device) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: memcpy_peer_async: the stream's device %d is neither %d nor %d",
                    s->device, src_device, dst_device);
  }
  if (g_devices[dst_device].context != g_devices[src_device].context) {
    return ocl_fail(HAL_STATUS_UNIMPLEMENTED, "opencl: devices %d and %d are on different platforms: no peer copy",
                    src_device, dst_device);
  }
  return copy(s, "memcpy_peer_async", dst, dst_device, src, src_device, size);
}

static hal_status_t ocl_memset(hal_stream_t s, void* dst, uint8_t value, uint64_t size) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (size == 0) return copy(s, "memset_async", dst, s->device, dst, s->device, 0);
  cl_mem mem;
  uint64_t off;
  if ((status = ocl_resolve(s->device, dst, size, &mem, &off)) != HAL_STATUS_OK) return status;
  cl_event ev = NULL;
  cl_int err = g_cl.clEnqueueFillBuffer(s->queue, mem, &value, 1, off, size, 0, NULL, &ev);
  if (err != CL_SUCCESS) return ocl_cl_fail(err, "clEnqueueFillBuffer", "memset_async");
  ocl_stream_track(s, ev, "memset_async");
  g_cl.clFlush(s->queue);
  return ocl_ok();
}

// Host functions: a marker whose completion callback hands |fn| to the stream's host thread, which runs it and
// then completes a user event the stream's later work waits for. The callback never runs |fn| itself: OpenCL
// may call it at once from the thread that sets it (pocl does when the marker is already complete), which
// would run the function on the caller's thread, and a function that blocks would stall every callback of the
// runtime.
struct host_call_t {
  hal_host_fn fn;
  void* user_data;
  cl_event done;
  cl_int status;  // The marker's: after a failure the function is skipped, as later work is.
  hal_stream_t stream;
  host_call_t* next;
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
    if (call->status >= 0) call->fn(call->user_data);
    g_cl.clSetUserEventStatus(call->done, CL_COMPLETE);
    g_cl.clReleaseEvent(call->done);
    free(call);
    pthread_mutex_lock(&s->host_mutex);
  }
  pthread_mutex_unlock(&s->host_mutex);
  return NULL;
}

static void run_host_call(cl_event marker, cl_int status, void* data) {
  (void)marker;
  host_call_t* call = data;
  hal_stream_t s = call->stream;
  call->status = status;
  pthread_mutex_lock(&s->host_mutex);
  if (s->host_tail) s->host_tail->next = call;
  else s->host_head = call;
  s->host_tail = call;
  pthread_cond_signal(&s->host_cv);
  pthread_mutex_unlock(&s->host_mutex);
}

static hal_status_t ocl_launch_host_func(hal_stream_t s, hal_host_fn fn, void* user_data) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (fn == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: launch_host_func: fn is NULL");
  pthread_mutex_lock(&s->host_mutex);
  const int started = s->host_started || pthread_create(&s->host_thread, NULL, host_thread_main, s) == 0;
  s->host_started = started;
  pthread_mutex_unlock(&s->host_mutex);
  if (!started) return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: launch_host_func: cannot start the stream's host thread");
  host_call_t* call = calloc(1, sizeof(*call));
  if (call == NULL) return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: launch_host_func: out of host memory");
  cl_int err = CL_SUCCESS;
  call->fn = fn;
  call->user_data = user_data;
  call->stream = s;
  call->done = g_cl.clCreateUserEvent(g_devices[s->device].context, &err);
  if (call->done == NULL || err != CL_SUCCESS) {
    free(call);
    return ocl_cl_fail(err, "clCreateUserEvent", "launch_host_func");
  }
  cl_event marker = NULL, barrier = NULL;
  err = g_cl.clEnqueueMarkerWithWaitList(s->queue, 0, NULL, &marker);
  if (err == CL_SUCCESS) {
    g_cl.clRetainEvent(call->done);  // One reference for the barrier's wait list, one for the callback.
    err = g_cl.clEnqueueBarrierWithWaitList(s->queue, 1, &call->done, &barrier);
    g_cl.clReleaseEvent(call->done);
  }
  if (err == CL_SUCCESS) err = g_cl.clSetEventCallback(marker, CL_COMPLETE, run_host_call, call);
  if (err != CL_SUCCESS) {
    g_cl.clSetUserEventStatus(call->done, -1);
    g_cl.clReleaseEvent(call->done);
    free(call);
    if (marker) g_cl.clReleaseEvent(marker);
    if (barrier) g_cl.clReleaseEvent(barrier);
    return ocl_cl_fail(err, "enqueueing a host function", "launch_host_func");
  }
  g_cl.clReleaseEvent(marker);
  ocl_stream_track(s, barrier, "launch_host_func");
  g_cl.clFlush(s->queue);
  return ocl_ok();
}

// ======================================================================================================
// 6. Programs and kernels
// ======================================================================================================

#define PROGRAM_MAGIC 0x4f434c50u  // "OCLP"
#define KERNEL_MAGIC 0x4f434c4bu   // "OCLK"

struct hal_program_s {
  uint32_t magic;
  int32_t device;
  cl_program program;
  int kernels;  // Live kernels (kernel.h: a program outlives them).
  pthread_mutex_t mutex;
};

// What a launch may pass to each kernel parameter: the runtime reads a value of the wrong kind (an offset as a
// buffer handle) without checking, so the plugin checks first. Known from the program's argument info
// (-cl-kernel-arg-info, added to every build of a user's OpenCL C); a SPIR-V program may lack it, and then only
// the count is checked.
typedef struct param_t {
  char kind;      // 'G' a __global or __constant pointer, 'L' a __local pointer, 'V' a value, '?' not known
  uint32_t size;  // A value's size in bytes where its type name says it (0: not known)
  char type[32];  // The type name, for messages
} param_t;

struct hal_kernel_s {
  uint32_t magic;
  hal_program_t program;
  cl_kernel kernel;
  pthread_mutex_t mutex;  // clSetKernelArg + enqueue are one step.
  char name[128];
  cl_uint num_params;
  param_t* params;
};

hal_status_t ocl_build(int32_t device, const char* source, size_t length, const char* options, cl_program* out) {
  ocl_device_t* d = &g_devices[device];
  cl_int err = CL_SUCCESS;
  cl_program p = g_cl.clCreateProgramWithSource(d->context, 1, &source, &length, &err);
  if (p == NULL || err != CL_SUCCESS) return ocl_cl_fail(err, "clCreateProgramWithSource", NULL);
  err = g_cl.clBuildProgram(p, 1, &d->id, options ? options : "", NULL, NULL);
  if (err != CL_SUCCESS) {
    size_t n = 0;
    g_cl.clGetProgramBuildInfo(p, d->id, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
    char* log = calloc(n + 1, 1);
    if (log) g_cl.clGetProgramBuildInfo(p, d->id, CL_PROGRAM_BUILD_LOG, n, log, NULL);
    hal_status_t status = ocl_cl_fail(err, "clBuildProgram", log && *log ? log : "no build log");
    free(log);
    g_cl.clReleaseProgram(p);
    return status == HAL_STATUS_DEVICE_ERROR ? HAL_STATUS_INVALID_ARGUMENT : status;
  }
  *out = p;
  return HAL_STATUS_OK;
}

static hal_status_t ocl_program_create(int32_t device, const char* format, const void* data, uint64_t size,
                                       const char* options, hal_program_t* out) {
  hal_status_t status = ocl_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (format == NULL || data == NULL || out == NULL || size == 0) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: program_create: NULL format, data or output, or size 0");
  }
  cl_program p = NULL;
  if (strcmp(format, "opencl-c") == 0) {
    // Argument info lets kernel_launch check each argument against its parameter.
    char* opts = malloc(strlen(options ? options : "") + 24);
    if (opts == NULL) return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: program_create: out of host memory");
    sprintf(opts, "%s -cl-kernel-arg-info", options ? options : "");
    status = ocl_build(device, data, size, opts, &p);
    free(opts);
  } else if (strcmp(format, "spirv") == 0 && g_devices[device].has_il) {
    cl_int err = CL_SUCCESS;
    p = g_cl.clCreateProgramWithIL(g_devices[device].context, data, size, &err);
    if (p == NULL || err != CL_SUCCESS) return ocl_cl_fail(err, "clCreateProgramWithIL", NULL);
    err = g_cl.clBuildProgram(p, 1, &g_devices[device].id, options ? options : "", NULL, NULL);
    if (err != CL_SUCCESS) {
      g_cl.clReleaseProgram(p);
      return ocl_cl_fail(err, "clBuildProgram", "spirv");
    }
  } else {
    return ocl_fail(HAL_STATUS_UNIMPLEMENTED, "opencl: program format '%s' is not taken on device %d (takes: opencl-c%s)",
                    format, device, g_devices[device].has_il ? ", spirv" : "");
  }
  if (status != HAL_STATUS_OK) return status;
  hal_program_t prog = calloc(1, sizeof(*prog));
  if (prog == NULL) {
    g_cl.clReleaseProgram(p);
    return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: program_create: out of host memory");
  }
  prog->magic = PROGRAM_MAGIC;
  prog->device = device;
  prog->program = p;
  pthread_mutex_init(&prog->mutex, NULL);
  *out = prog;
  return ocl_ok();
}

static hal_status_t ocl_program_destroy(hal_program_t p) {
  if (p == NULL || p->magic != PROGRAM_MAGIC) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: not a program of this plugin");
  pthread_mutex_lock(&p->mutex);
  int live = p->kernels;
  pthread_mutex_unlock(&p->mutex);
  if (live) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: program_destroy: %d of its kernels are alive", live);
  g_cl.clReleaseProgram(p->program);
  p->magic = 0;
  free(p);
  return ocl_ok();
}

// The size of an OpenCL C scalar or vector type from its name ("float", "uint4"), 0 when not one.
static uint32_t value_size(const char* type) {
  static const struct { const char* name; uint32_t size; } scalars[] = {
      {"char", 1}, {"uchar", 1}, {"bool", 1}, {"short", 2}, {"ushort", 2}, {"half", 2}, {"int", 4},
      {"uint", 4}, {"float", 4}, {"long", 8}, {"ulong", 8}, {"double", 8}};
  for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
    size_t n = strlen(scalars[i].name);
    if (strncmp(type, scalars[i].name, n) != 0) continue;
    const char* rest = type + n;
    if (*rest == 0) return scalars[i].size;
    int lanes = atoi(rest);
    if (lanes == 2 || lanes == 4 || lanes == 8 || lanes == 16) return scalars[i].size * (uint32_t)lanes;
    if (lanes == 3) return scalars[i].size * 4;  // A 3-vector is the size of a 4-vector.
  }
  return 0;
}

// Fills k->params from the kernel's argument info; kinds '?' where the program has none.
static hal_status_t describe_params(hal_kernel_t k) {
  cl_uint n = 0;
  if (g_cl.clGetKernelInfo(k->kernel, CL_KERNEL_NUM_ARGS, sizeof(n), &n, NULL) != CL_SUCCESS) n = 0;
  k->num_params = n;
  k->params = calloc(n ? n : 1, sizeof(param_t));
  if (k->params == NULL) return HAL_STATUS_OUT_OF_MEMORY;
  for (cl_uint i = 0; i < n; i++) {
    param_t* p = &k->params[i];
    cl_kernel_arg_address_qualifier q = 0;
    p->kind = '?';
    if (g_cl.clGetKernelArgInfo(k->kernel, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(q), &q, NULL) != CL_SUCCESS) {
      continue;
    }
    if (g_cl.clGetKernelArgInfo(k->kernel, i, CL_KERNEL_ARG_TYPE_NAME, sizeof(p->type) - 1, p->type, NULL) !=
        CL_SUCCESS) {
      p->type[0] = 0;
    }
    const int pointer = strchr(p->type, '*') != NULL;
    if (q == CL_KERNEL_ARG_ADDRESS_GLOBAL || q == CL_KERNEL_ARG_ADDRESS_CONSTANT) {
      p->kind = 'G';
    } else if (q == CL_KERNEL_ARG_ADDRESS_LOCAL) {
      p->kind = 'L';
    } else if (!pointer) {
      p->kind = 'V';
      p->size = value_size(p->type);
    }
  }
  return HAL_STATUS_OK;
}

// Checks |args| against the kernel's parameters before any is set: a BUFFER is a __global pointer followed by a
// ulong byte offset, BYTES a value of its size, LOCAL a __local pointer, and the count must match.
static hal_status_t check_launch_args(hal_kernel_t k, const hal_kernel_arg_t* args, uint64_t num_args) {
  uint64_t want = 0;
  for (uint64_t i = 0; i < num_args; i++) want += args[i].kind == HAL_KERNEL_ARG_BUFFER ? 2 : 1;
  if (want != k->num_params) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT,
                    "opencl: kernel '%s' has %u parameters; the %llu arguments given fill %llu (a BUFFER argument "
                    "fills two: the buffer and a ulong byte offset)",
                    k->name, k->num_params, (unsigned long long)num_args, (unsigned long long)want);
  }
  static const char* const kinds[] = {"BUFFER", "BYTES", "LOCAL"};
  cl_uint index = 0;
  for (uint64_t i = 0; i < num_args; i++) {
    const hal_kernel_arg_t* a = &args[i];
    const param_t* p = &k->params[index];
    const char* kind = a->kind >= 0 && a->kind <= 2 ? kinds[a->kind] : "?";
    const char* wrong = NULL;
    if (a->kind == HAL_KERNEL_ARG_BUFFER) {
      const param_t* off = &k->params[index + 1];
      if (p->kind != 'G' && p->kind != '?') wrong = "a __global pointer";
      else if ((off->kind != 'V' && off->kind != '?') || (off->size && off->size != 8)) {
        p = off, index++, wrong = "a ulong byte offset after the buffer";
      }
    } else if (a->kind == HAL_KERNEL_ARG_BYTES) {
      if (p->kind != 'V' && p->kind != '?') wrong = "a value";
      else if (p->size && p->size != a->size) {
        return ocl_fail(HAL_STATUS_INVALID_ARGUMENT,
                        "opencl: kernel '%s' argument %llu: parameter %u is a %s of %u bytes, the argument gives %llu",
                        k->name, (unsigned long long)i, index, p->type, p->size, (unsigned long long)a->size);
      }
    } else if (a->kind == HAL_KERNEL_ARG_LOCAL) {
      if (p->kind != 'L' && p->kind != '?') wrong = "a __local pointer";
    }
    if (wrong) {
      return ocl_fail(HAL_STATUS_INVALID_ARGUMENT,
                      "opencl: kernel '%s' argument %llu (%s) needs %s, but parameter %u is %s%s", k->name,
                      (unsigned long long)i, kind, wrong, index,
                      p->kind == 'G' ? "a __global pointer " : p->kind == 'L' ? "a __local pointer " : "", p->type);
    }
    index += a->kind == HAL_KERNEL_ARG_BUFFER ? 2 : 1;
  }
  return HAL_STATUS_OK;
}

static hal_status_t ocl_kernel_create(hal_program_t p, const char* name, hal_kernel_t* out) {
  if (p == NULL || p->magic != PROGRAM_MAGIC) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: not a program of this plugin");
  if (name == NULL || out == NULL) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: kernel_create: NULL name or output");
  cl_int err = CL_SUCCESS;
  cl_kernel k = g_cl.clCreateKernel(p->program, name, &err);
  if (k == NULL || err != CL_SUCCESS) {
    char detail[192];
    snprintf(detail, sizeof(detail), "no kernel '%s' in the program", name);
    return ocl_cl_fail(err, "clCreateKernel", detail);
  }
  hal_kernel_t kernel = calloc(1, sizeof(*kernel));
  if (kernel == NULL) {
    g_cl.clReleaseKernel(k);
    return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: kernel_create: out of host memory");
  }
  kernel->magic = KERNEL_MAGIC;
  kernel->program = p;
  kernel->kernel = k;
  snprintf(kernel->name, sizeof(kernel->name), "%s", name);
  if (describe_params(kernel) != HAL_STATUS_OK) {
    g_cl.clReleaseKernel(k);
    free(kernel);
    return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: kernel_create: out of host memory");
  }
  pthread_mutex_init(&kernel->mutex, NULL);
  pthread_mutex_lock(&p->mutex);
  p->kernels++;
  pthread_mutex_unlock(&p->mutex);
  *out = kernel;
  return ocl_ok();
}

static hal_status_t ocl_kernel_destroy(hal_kernel_t k) {
  if (k == NULL || k->magic != KERNEL_MAGIC) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: not a kernel of this plugin");
  g_cl.clReleaseKernel(k->kernel);  // Launches already queued hold their own reference.
  free(k->params);
  pthread_mutex_lock(&k->program->mutex);
  k->program->kernels--;
  pthread_mutex_unlock(&k->program->mutex);
  k->magic = 0;
  free(k);
  return ocl_ok();
}

// Launches: a BUFFER argument is two kernel parameters, the buffer and a ulong byte offset into it.
static hal_status_t ocl_kernel_launch(hal_stream_t s, hal_kernel_t k, const uint64_t global[3], const uint64_t* local,
                                      const hal_kernel_arg_t* args, uint64_t num_args) {
  hal_status_t status = check_stream(s);
  if (status != HAL_STATUS_OK) return status;
  if (k == NULL || k->magic != KERNEL_MAGIC) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: not a kernel of this plugin");
  if (k->program->device != s->device) {
    return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: kernel '%s' was built for device %d, not the stream's %d",
                    k->name, k->program->device, s->device);
  }
  if (global == NULL || (num_args && args == NULL)) return ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: kernel_launch: NULL sizes or arguments");
  if ((status = check_launch_args(k, args, num_args)) != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&k->mutex);
  cl_uint index = 0;
  cl_int err = CL_SUCCESS;
  for (uint64_t i = 0; i < num_args && err == CL_SUCCESS; i++) {
    const hal_kernel_arg_t* a = &args[i];
    if (a->kind == HAL_KERNEL_ARG_BUFFER) {
      cl_mem mem;
      uint64_t off;
      status = ocl_resolve(s->device, a->value, 1, &mem, &off);
      if (status != HAL_STATUS_OK) break;
      cl_ulong offset = off;
      err = g_cl.clSetKernelArg(k->kernel, index++, sizeof(cl_mem), &mem);
      if (err == CL_SUCCESS) err = g_cl.clSetKernelArg(k->kernel, index++, sizeof(offset), &offset);
    } else if (a->kind == HAL_KERNEL_ARG_BYTES) {
      err = g_cl.clSetKernelArg(k->kernel, index++, a->size, a->value);
    } else if (a->kind == HAL_KERNEL_ARG_LOCAL) {
      err = g_cl.clSetKernelArg(k->kernel, index++, a->size, NULL);
    } else {
      status = ocl_fail(HAL_STATUS_INVALID_ARGUMENT, "opencl: kernel '%s': argument %llu has unknown kind %d", k->name,
                        (unsigned long long)i, (int)a->kind);
    }
  }
  cl_event ev = NULL;
  if (status == HAL_STATUS_OK && err == CL_SUCCESS) {
    size_t g[3] = {global[0], global[1], global[2]}, l[3] = {0, 0, 0};
    if (local) l[0] = local[0], l[1] = local[1], l[2] = local[2];
    if (g[0] * g[1] * g[2] == 0) {
      err = g_cl.clEnqueueMarkerWithWaitList(s->queue, 0, NULL, &ev);  // Nothing to run; keeps the order.
    } else {
      err = g_cl.clEnqueueNDRangeKernel(s->queue, k->kernel, 3, NULL, g, local ? l : NULL, 0, NULL, &ev);
    }
  }
  pthread_mutex_unlock(&k->mutex);
  if (status != HAL_STATUS_OK) return status;
  if (err != CL_SUCCESS) {
    char detail[192];
    snprintf(detail, sizeof(detail), "kernel '%s'", k->name);
    return ocl_cl_fail(err, index < num_args * 2 ? "clSetKernelArg" : "clEnqueueNDRangeKernel", detail);
  }
  ocl_stream_track(s, ev, "kernel launch");
  g_cl.clFlush(s->queue);
  return ocl_ok();
}

// ======================================================================================================
// 7. The table
// ======================================================================================================

static const hal_plugin_api_t g_api = {
    .struct_size = sizeof(hal_plugin_api_t),
    .abi_major = HAL_ABI_VERSION_MAJOR,
    .abi_minor = HAL_ABI_VERSION_MINOR,
    .name = "opencl",
    .version = HAL_PLUGIN_VERSION,
    .initialize = ocl_initialize,
    .shutdown = ocl_shutdown,
    .get_last_error = ocl_get_last_error,
    .device_count = ocl_device_count,
    .device_get_properties = ocl_get_properties,
    .device_get_memory_info = ocl_get_memory_info,
    .memory_allocate = ocl_memory_allocate,
    .memory_free = ocl_memory_free,
    .stream_create = ocl_stream_create,
    .stream_destroy = ocl_stream_destroy,
    .stream_synchronize = ocl_stream_synchronize,
    .stream_query = ocl_stream_query,
    .stream_wait_event = ocl_stream_wait_event,
    .event_create = ocl_event_create,
    .event_destroy = ocl_event_destroy,
    .event_record = ocl_event_record,
    .event_synchronize = ocl_event_synchronize,
    .event_query = ocl_event_query,
    .event_elapsed_time = ocl_event_elapsed_time,
    .memcpy_h2d_async = ocl_h2d,
    .memcpy_d2h_async = ocl_d2h,
    .memcpy_d2d_async = ocl_d2d,
    .memcpy_peer_async = ocl_peer,
    .memset_async = ocl_memset,
    .launch_host_func = ocl_launch_host_func,
    .op_list = ocl_op_list,
    .op_launch = ocl_op_launch,
    .program_create = ocl_program_create,
    .program_destroy = ocl_program_destroy,
    .kernel_create = ocl_kernel_create,
    .kernel_destroy = ocl_kernel_destroy,
    .kernel_launch = ocl_kernel_launch,
};

HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) { return &g_api; }
