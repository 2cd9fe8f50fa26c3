// null: the skeleton plugin. Every entry is present and answers HAL_STATUS_UNIMPLEMENTED, except the few
// a loader needs to list the plugin: initialize, shutdown, get_last_error, device_count (one device) and
// device_get_properties. To start a new plugin, copy this folder and fill in the entries one by one; see
// README.md. The emu plugin (devices/emu) shows a complete implementation of every entry.
#include <stdio.h>
#include <string.h>

#include "hal/hal.h"

// HAL's build passes the project's version; a plugin built on its own states its own.
#ifndef HAL_PLUGIN_VERSION
#define HAL_PLUGIN_VERSION "0.1.0"
#endif

// --- Error model: a thread-local message (and native code) read back by get_last_error -------------------

static _Thread_local char t_message[256];
static _Thread_local int32_t t_native_code;

static hal_status_t null_ok(void) {
  t_message[0] = '\0';
  t_native_code = 0;
  return HAL_STATUS_OK;
}

static hal_status_t null_fail(hal_status_t status, const char* message) {
  snprintf(t_message, sizeof(t_message), "%s", message);
  t_native_code = 0;  // A real plugin stores its driver's error code here.
  return status;
}

#define UNIMPLEMENTED(entry) null_fail(HAL_STATUS_UNIMPLEMENTED, "null plugin: " #entry " is not implemented")

static size_t null_get_last_error(char* buffer, size_t capacity, int32_t* out_native_code) {
  size_t length = strlen(t_message);
  if (capacity > 0) {
    size_t n = length < capacity - 1 ? length : capacity - 1;
    memcpy(buffer, t_message, n);
    buffer[n] = '\0';
  }
  if (out_native_code) *out_native_code = t_native_code;
  return length;
}

// --- Plugin lifetime ------------------------------------------------------------------------------------

static int g_initialized;

// A real plugin loads its driver here (dlopen, so it builds on machines without it) and reads args->config.
static hal_status_t null_initialize(const hal_plugin_init_args_t* args) {
  g_initialized = 1;
  return null_ok();
}

static void null_shutdown(void) { g_initialized = 0; }

// --- Devices --------------------------------------------------------------------------------------------

// One device, so the plugin shows up in listings and its UNIMPLEMENTED answers can be exercised.
static hal_status_t null_device_count(int32_t* out_count) {
  if (out_count == NULL) return null_fail(HAL_STATUS_INVALID_ARGUMENT, "null plugin: out_count is NULL");
  *out_count = g_initialized ? 1 : 0;
  return g_initialized ? null_ok() : null_fail(HAL_STATUS_UNAVAILABLE, "null plugin: not initialized");
}

static hal_status_t null_device_get_properties(int32_t device, hal_device_properties_t* out) {
  if (!g_initialized) return null_fail(HAL_STATUS_UNAVAILABLE, "null plugin: not initialized");
  if (device != 0 || out == NULL) return null_fail(HAL_STATUS_INVALID_ARGUMENT, "null plugin: bad device");
  // Write only the fields the caller's struct_size covers (see device.h).
  if (HAL_STRUCT_HAS_FIELD(out, hal_device_properties_t, name)) snprintf(out->name, sizeof(out->name), "null device");
  if (HAL_STRUCT_HAS_FIELD(out, hal_device_properties_t, vendor)) snprintf(out->vendor, sizeof(out->vendor), "HAL");
  if (HAL_STRUCT_HAS_FIELD(out, hal_device_properties_t, kind)) out->kind = HAL_DEVICE_KIND_OTHER;
  return null_ok();  // Every other figure stays 0: unknown.
}

static hal_status_t null_device_get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  return UNIMPLEMENTED(device_get_memory_info);
}

// --- Memory ---------------------------------------------------------------------------------------------

static hal_status_t null_memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
  return UNIMPLEMENTED(memory_allocate);
}
static hal_status_t null_memory_free(int32_t device, void* ptr) { return UNIMPLEMENTED(memory_free); }

// --- Streams and events ---------------------------------------------------------------------------------

static hal_status_t null_stream_create(int32_t device, hal_stream_t* out) { return UNIMPLEMENTED(stream_create); }
static hal_status_t null_stream_destroy(hal_stream_t stream) { return UNIMPLEMENTED(stream_destroy); }
static hal_status_t null_stream_synchronize(hal_stream_t stream) { return UNIMPLEMENTED(stream_synchronize); }
static hal_status_t null_stream_query(hal_stream_t stream) { return UNIMPLEMENTED(stream_query); }
static hal_status_t null_stream_wait_event(hal_stream_t stream, hal_event_t event) {
  return UNIMPLEMENTED(stream_wait_event);
}
static hal_status_t null_event_create(int32_t device, uint32_t flags, hal_event_t* out) {
  return UNIMPLEMENTED(event_create);
}
static hal_status_t null_event_destroy(hal_event_t event) { return UNIMPLEMENTED(event_destroy); }
static hal_status_t null_event_record(hal_event_t event, hal_stream_t stream) { return UNIMPLEMENTED(event_record); }
static hal_status_t null_event_synchronize(hal_event_t event) { return UNIMPLEMENTED(event_synchronize); }
static hal_status_t null_event_query(hal_event_t event) { return UNIMPLEMENTED(event_query); }
static hal_status_t null_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  return UNIMPLEMENTED(event_elapsed_time);
}

// --- Copies ---------------------------------------------------------------------------------------------

static hal_status_t null_memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return UNIMPLEMENTED(memcpy_h2d_async);
}
static hal_status_t null_memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return UNIMPLEMENTED(memcpy_d2h_async);
}
static hal_status_t null_memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return UNIMPLEMENTED(memcpy_d2d_async);
}

// --- The exported table ---------------------------------------------------------------------------------

static const hal_plugin_api_t g_api = {
    .struct_size = sizeof(hal_plugin_api_t),
    .abi_major = HAL_ABI_VERSION_MAJOR,
    .abi_minor = HAL_ABI_VERSION_MINOR,
    .name = "null",
    .version = HAL_PLUGIN_VERSION,
    .initialize = null_initialize,
    .shutdown = null_shutdown,
    .get_last_error = null_get_last_error,
    .device_count = null_device_count,
    .device_get_properties = null_device_get_properties,
    .device_get_memory_info = null_device_get_memory_info,
    .memory_allocate = null_memory_allocate,
    .memory_free = null_memory_free,
    .stream_create = null_stream_create,
    .stream_destroy = null_stream_destroy,
    .stream_synchronize = null_stream_synchronize,
    .stream_query = null_stream_query,
    .stream_wait_event = null_stream_wait_event,
    .event_create = null_event_create,
    .event_destroy = null_event_destroy,
    .event_record = null_event_record,
    .event_synchronize = null_event_synchronize,
    .event_query = null_event_query,
    .event_elapsed_time = null_event_elapsed_time,
    .memcpy_h2d_async = null_memcpy_h2d_async,
    .memcpy_d2h_async = null_memcpy_d2h_async,
    .memcpy_d2d_async = null_memcpy_d2d_async,
    // Optional entries: NULL means "not supported", and HAL falls back or reports it.
    .host_allocate = NULL,       // Pinned host memory; HAL uses ordinary memory without it.
    .host_free = NULL,           // Comes with host_allocate.
    .memcpy_peer_async = NULL,   // Device-to-device across devices; HAL stages through the host without it.
    .memset_async = NULL,        // HAL fills through a host buffer and a copy without it.
    .launch_host_func = NULL,    // Host callbacks on a stream; HAL synchronizes instead.
    .memory_map = NULL,          // Host mappings of device memory (set HAL_DEVICE_FLAG_MAPPABLE with it).
    .memory_unmap = NULL,        // Comes with memory_map.
    // Collectives: all of comm_get_unique_id, comm_init_rank, comm_destroy, comm_abort and allreduce, or
    // none (collective.h); without them HAL has no collectives on the device yet (bridging through the
    // host is planned).
    .comm_get_unique_id = NULL,
    .comm_init_rank = NULL,
    .comm_destroy = NULL,
    .comm_abort = NULL,
    .allreduce = NULL,
    .allgather = NULL,
    .reduce_scatter = NULL,
    .broadcast = NULL,
    .send = NULL,
    .recv = NULL,
};

HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) { return &g_api; }
