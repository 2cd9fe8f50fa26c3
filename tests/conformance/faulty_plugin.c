// Faulty variants of a plugin, for testing `hal conformance` itself (test_faulty_plugins.py).
//
// This library wraps a working plugin (HAL_REAL_PLUGIN, a path given at build time: the emu plugin) and
// exports its table with faults put in, chosen by $HAL_FAULT (comma-separated) when the table is first read; without
// HAL_FAULT (or "none") it is the real plugin, unchanged. Each fault is a bug a real plugin had or could
// have; the test asserts that the conformance suite fails it in the right area.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hal/hal.h"

static hal_plugin_api_t g_real, g_api;
static const char* g_fault = "none";

// True when |name| is one of the comma-separated faults in $HAL_FAULT.
static int fault(const char* name) {
  size_t n = strlen(name);
  for (const char* p = g_fault; (p = strstr(p, name)) != NULL; p += n) {
    if ((p == g_fault || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
  }
  return 0;
}

// memory: memory_free returns OK and frees nothing.
static hal_status_t leaky_free(int32_t device, void* ptr) { (void)device; (void)ptr; return HAL_STATUS_OK; }

// memory: memory_info answers its first figures forever.
static hal_status_t frozen_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  static uint64_t first_free, first_total;
  static int have;
  hal_status_t status = g_real.device_get_memory_info(device, out_free, out_total);
  if (status != HAL_STATUS_OK) return status;
  if (!have) first_free = *out_free, first_total = *out_total, have = 1;
  *out_free = first_free, *out_total = first_total;
  return HAL_STATUS_OK;
}

// memory: pointers 16 bytes past a 256-byte boundary.
static hal_status_t unaligned_allocate(int32_t device, uint64_t size, void** out_ptr) {
  hal_status_t status = g_real.memory_allocate(device, size + 256, out_ptr);
  if (status == HAL_STATUS_OK) *out_ptr = (char*)*out_ptr + 16;
  return status;
}
static hal_status_t unaligned_free(int32_t device, void* ptr) { return g_real.memory_free(device, (char*)ptr - 16); }

// threading: the pointer passes through an unguarded global, so concurrent callers swap allocations.
static void* g_slot;
static hal_status_t racy_allocate(int32_t device, uint64_t size, void** out_ptr) {
  hal_status_t status = g_real.memory_allocate(device, size, &g_slot);
  usleep(200);
  *out_ptr = g_slot;
  return status;
}

// events: elapsed_time in microseconds.
static hal_status_t microseconds_elapsed(hal_event_t start, hal_event_t end, float* out_ms) {
  hal_status_t status = g_real.event_elapsed_time(start, end, out_ms);
  if (status == HAL_STATUS_OK) *out_ms *= 1000.0f;
  return status;
}

// events: an event that never completes (and a query that says so).
static hal_status_t endless_event_synchronize(hal_event_t event) {
  (void)event;
  for (;;) sleep(1);
  return HAL_STATUS_OK;  // Never reached.
}
static hal_status_t never_ready_query(hal_event_t event) { (void)event; return HAL_STATUS_NOT_READY; }

// events: event_query always says complete.
static hal_status_t lying_event_query(hal_event_t event) { (void)event; return HAL_STATUS_OK; }

// events: stream_wait_event does nothing.
static hal_status_t ignored_wait(hal_stream_t stream, hal_event_t event) { (void)stream; (void)event; return HAL_STATUS_OK; }

// streams: stream_synchronize returns at once unless the stream already failed.
static hal_status_t hasty_synchronize(hal_stream_t stream) {
  hal_status_t status = g_real.stream_query(stream);
  return status == HAL_STATUS_NOT_READY ? HAL_STATUS_OK : status;
}

// streams: stream_destroy returns at once, the real destroy (which waits) left to a detached thread.
static void* destroy_later(void* stream) { g_real.stream_destroy((hal_stream_t)stream); return NULL; }
static hal_status_t hasty_destroy(hal_stream_t stream) {
  pthread_t thread;
  pthread_create(&thread, NULL, destroy_later, stream);
  pthread_detach(thread);
  return HAL_STATUS_OK;
}

// streams: stream_query always says done.
static hal_status_t done_query(hal_stream_t stream) { (void)stream; return HAL_STATUS_OK; }

// errors: a queued failure never reaches stream_synchronize.
static hal_status_t swallowing_synchronize(hal_stream_t stream) {
  hal_status_t status = g_real.stream_synchronize(stream);
  return status == HAL_STATUS_DEVICE_ERROR ? HAL_STATUS_OK : status;
}

// errors: a stream that failed once reports it on every synchronize after (never cleared).
static hal_stream_t g_failed[64];
static pthread_mutex_t g_failed_mutex = PTHREAD_MUTEX_INITIALIZER;
static hal_status_t sticky_forever_synchronize(hal_stream_t stream) {
  hal_status_t status = g_real.stream_synchronize(stream);
  pthread_mutex_lock(&g_failed_mutex);
  int seen = 0;
  for (int i = 0; i < 64; i++) {
    if (g_failed[i] == stream) seen = 1;
  }
  if (status == HAL_STATUS_DEVICE_ERROR && !seen) {
    for (int i = 0; i < 64; i++) {
      if (!g_failed[i]) { g_failed[i] = stream; break; }
    }
  }
  pthread_mutex_unlock(&g_failed_mutex);
  return seen ? HAL_STATUS_DEVICE_ERROR : status;
}

// errors: the first message ever seen, forever, even after successful calls (plausible, but wrong).
static char g_first_message[512];
static pthread_mutex_t g_message_mutex = PTHREAD_MUTEX_INITIALIZER;
static size_t stale_last_error(char* buffer, size_t capacity, int32_t* out_native_code) {
  char now[512];
  g_real.get_last_error(now, sizeof now, out_native_code);
  pthread_mutex_lock(&g_message_mutex);
  if (!g_first_message[0] && now[0]) snprintf(g_first_message, sizeof g_first_message, "%s", now);
  size_t length = strlen(g_first_message);
  if (capacity > 0) snprintf(buffer, capacity, "%s", g_first_message);
  pthread_mutex_unlock(&g_message_mutex);
  return length;
}

// errors: get_last_error ignores |capacity| and returns a wrong length.
static size_t careless_last_error(char* buffer, size_t capacity, int32_t* out_native_code) {
  char now[512];
  size_t length = g_real.get_last_error(now, sizeof now, out_native_code);
  if (capacity > 0) strcpy(buffer, now);
  return length + 3;
}

// errors: invalid arguments accepted (size 0 allocates; an unknown device answers as device 0).
static hal_status_t lenient_allocate(int32_t device, uint64_t size, void** out_ptr) {
  return g_real.memory_allocate(device < 0 ? 0 : device, size ? size : 256, out_ptr);
}

// properties: the whole struct written whatever struct_size says.
static hal_status_t oversized_properties(int32_t device, hal_device_properties_t* out) {
  hal_device_properties_t full;
  memset(&full, 0, sizeof full);
  full.struct_size = sizeof full;
  hal_status_t status = g_real.device_get_properties(device, &full);
  if (status == HAL_STATUS_OK) memcpy(out, &full, sizeof full);
  return status;
}

// copies: d2d copies rounded down to 256-byte boundaries (offsets ignored).
static hal_status_t offsetless_d2d(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return g_real.memcpy_d2d_async(stream, (void*)((uintptr_t)dst & ~(uintptr_t)255),
                                 (const void*)((uintptr_t)src & ~(uintptr_t)255), size);
}

// pinned: every host_allocate returns the same buffer.
static char g_pinned[8 << 20];
static hal_status_t aliasing_host_allocate(uint64_t size, void** out_ptr) {
  if (size > sizeof g_pinned) return HAL_STATUS_OUT_OF_MEMORY;
  *out_ptr = g_pinned;
  return HAL_STATUS_OK;
}
static hal_status_t aliasing_host_free(void* ptr) { (void)ptr; return HAL_STATUS_OK; }

// events: elapsed_time in seconds.
static hal_status_t seconds_elapsed(hal_event_t start, hal_event_t end, float* out_ms) {
  hal_status_t status = g_real.event_elapsed_time(start, end, out_ms);
  if (status == HAL_STATUS_OK) *out_ms /= 1000.0f;
  return status;
}

// kernels: an integer alpha (add.Tensor's) taken with the wrong sign.
static hal_status_t wrong_alpha_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                                       const hal_tensor_t* results, uint64_t num_results) {
  hal_value_t copy[16];
  if (num_args > 16) return g_real.op_launch(stream, op, args, num_args, results, num_results);
  memcpy(copy, args, num_args * sizeof *args);
  for (uint64_t i = 0; i < num_args; i++) {
    if (copy[i].kind == HAL_VALUE_INT) copy[i].u.i = -copy[i].u.i;
  }
  return g_real.op_launch(stream, op, copy, num_args, results, num_results);
}

// collectives: allreduce that only copies this rank's own data.
static hal_status_t local_allreduce(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count,
                                    hal_dtype_t dtype, hal_reduce_op_t op, hal_stream_t stream) {
  (void)comm, (void)op;
  if (dtype != HAL_DTYPE_F32) return HAL_STATUS_UNIMPLEMENTED;
  return sendbuf == recvbuf ? HAL_STATUS_OK : g_real.memcpy_d2d_async(stream, recvbuf, sendbuf, count * 4);
}

// loading: shutdown never returns.
static void endless_shutdown(void) {
  for (;;) sleep(1);
}

HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) {
  if (g_api.struct_size) return &g_api;
  void* real = dlopen(HAL_REAL_PLUGIN, RTLD_NOW | RTLD_LOCAL);
  if (!real) return NULL;
  const hal_plugin_api_t* (*get)(void) = (const hal_plugin_api_t* (*)(void))dlsym(real, HAL_PLUGIN_ENTRY_SYMBOL);
  g_real = *get();
  g_api = g_real;
  if (getenv("HAL_FAULT")) g_fault = getenv("HAL_FAULT");
  if (fault("abi_major")) g_api.abi_major = 2;
  if (fault("missing_entry")) g_api.stream_query = NULL;
  if (fault("free_leaks")) g_api.memory_free = leaky_free;
  if (fault("memory_info_frozen")) g_api.device_get_memory_info = frozen_memory_info;
  if (fault("unaligned")) g_api.memory_allocate = unaligned_allocate, g_api.memory_free = unaligned_free;
  if (fault("racy_allocate")) g_api.memory_allocate = racy_allocate;
  if (fault("elapsed_microseconds")) g_api.event_elapsed_time = microseconds_elapsed;
  if (fault("event_never_completes")) g_api.event_synchronize = endless_event_synchronize, g_api.event_query = never_ready_query;
  if (fault("event_query_lies")) g_api.event_query = lying_event_query;
  if (fault("wait_event_ignored")) g_api.stream_wait_event = ignored_wait;
  if (fault("synchronize_ignores_running")) g_api.stream_synchronize = hasty_synchronize;
  if (fault("destroy_does_not_wait")) g_api.stream_destroy = hasty_destroy;
  if (fault("stream_query_done")) g_api.stream_query = done_query;
  if (fault("sticky_swallowed")) g_api.stream_synchronize = swallowing_synchronize;
  if (fault("sticky_never_cleared")) g_api.stream_synchronize = sticky_forever_synchronize;
  if (fault("last_error_stale")) g_api.get_last_error = stale_last_error;
  if (fault("last_error_garbage")) g_api.get_last_error = careless_last_error;
  if (fault("invalid_arguments_accepted")) g_api.memory_allocate = lenient_allocate;
  if (fault("properties_ignore_struct_size")) g_api.device_get_properties = oversized_properties;
  if (fault("d2d_ignores_offsets")) g_api.memcpy_d2d_async = offsetless_d2d;
  if (fault("pinned_aliases")) g_api.host_allocate = aliasing_host_allocate, g_api.host_free = aliasing_host_free;
  if (fault("elapsed_seconds")) g_api.event_elapsed_time = seconds_elapsed;
  if (fault("op_launch_wrong_alpha")) g_api.op_launch = wrong_alpha_launch;
  if (fault("allreduce_local_only")) g_api.allreduce = local_allreduce;
  if (fault("shutdown_hangs")) g_api.shutdown = endless_shutdown;
  // Not a fault (the entry is optional): the suite's fallbacks for plugins without host functions.
  if (fault("no_host_func")) g_api.launch_host_func = NULL;
  return &g_api;
}
