// cpu: the reference device, one device (cpu:0) backed by host memory.
//
// It always runs, so HAL's upper layers are tested on any machine. Memory is ordinary aligned host
// memory (HOST_ADDRESSABLE: device pointers may be dereferenced; memory_map returns the pointer itself).
// Streams keep the full asynchronous semantics of an accelerator: they come from the software stream
// engine (devices/common/sw_stream.h), which emu shares, configured here with host-speed work on memory
// that needs no translation.
//
// Config (hal_plugin_init_args_t.config): empty, or "mem=SIZE" (e.g. "mem=64MiB") to cap the memory the
// device may allocate, which makes out-of-memory paths testable.
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>

#include "hal/hal.h"
#include "sw_stream.h"

namespace {

// --- Error model: thread-local last error ----------------------------------------------------------------

thread_local std::string t_message;
thread_local int32_t t_native_code = 0;

hal_status_t ok() {
  t_message.clear();
  t_native_code = 0;
  return HAL_STATUS_OK;
}

__attribute__((format(printf, 2, 3))) hal_status_t fail(hal_status_t status, const char* format, ...) {
  char buffer[512];
  va_list args;
  va_start(args, format);
  vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  t_message = buffer;
  t_native_code = 0;
  return status;
}

size_t cpu_get_last_error(char* buffer, size_t capacity, int32_t* out_native_code) {
  if (capacity > 0) {
    size_t n = std::min(t_message.size(), capacity - 1);
    std::memcpy(buffer, t_message.data(), n);
    buffer[n] = '\0';
  }
  if (out_native_code) *out_native_code = t_native_code;
  return t_message.size();
}

// --- The device and its memory ---------------------------------------------------------------------------

struct Device {
  bool initialized = false;
  std::string name = "cpu", vendor = "unknown";
  uint64_t physical_bytes = 0;
  uint64_t limit = 0;  // "mem=SIZE"; 0 = physical memory, not enforced beyond what malloc can do.

  std::mutex mutex;                         // Guards the two below.
  std::map<uintptr_t, uint64_t> allocations;  // base -> size
  uint64_t in_use = 0;

  // True when [ptr, ptr + size) lies inside one allocation.
  bool owns(const void* ptr, uint64_t size) {
    auto address = reinterpret_cast<uintptr_t>(ptr);
    std::lock_guard<std::mutex> lock(mutex);
    auto it = allocations.upper_bound(address);
    if (it == allocations.begin()) return false;
    --it;
    return address < it->first + it->second && size <= it->first + it->second - address;
  }
};
Device g_device;

// Model name and vendor from /proc/cpuinfo, where it exists (x86 has both; others may lack vendor_id).
void read_cpuinfo(Device& device) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  auto value_of = [&line](const char* key) -> std::string {
    if (line.compare(0, std::strlen(key), key) != 0) return "";
    auto colon = line.find(':');
    return colon == std::string::npos ? "" : line.substr(line.find_first_not_of(" \t", colon + 1));
  };
  while (std::getline(cpuinfo, line)) {
    if (auto v = value_of("model name"); !v.empty() && device.name == "cpu") device.name = v;
    if (auto v = value_of("vendor_id"); !v.empty() && device.vendor == "unknown") {
      device.vendor = v == "GenuineIntel" ? "Intel" : v == "AuthenticAMD" ? "AMD" : v;
    }
  }
}

hal_status_t check_device(int32_t device) {
  if (!g_device.initialized) return fail(HAL_STATUS_UNAVAILABLE, "cpu: plugin is not initialized");
  if (device != 0) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: no device %d (the plugin has 1)", device);
  return HAL_STATUS_OK;
}

// The stream engine resolves device pointers through this: host memory, once checked.
hal_status_t cpu_resolve(int32_t device, const void* device_ptr, uint64_t size, void** out_host_ptr) {
  if (!g_device.owns(device_ptr, size)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: %llu bytes at %p are not inside an allocation of cpu:0",
                (unsigned long long)size, device_ptr);
  }
  *out_host_ptr = const_cast<void*>(device_ptr);
  return HAL_STATUS_OK;
}

const char* cpu_last_message() { return t_message.c_str(); }

// fork(): a worker thread may hold the allocation table's lock at that moment; holding it across fork()
// gives the child a consistent table, so the child can still free memory.
void register_fork_handlers() {
  pthread_atfork([] { g_device.mutex.lock(); }, [] { g_device.mutex.unlock(); }, [] { g_device.mutex.unlock(); });
}

}  // namespace

// What the stream engine needs from cpu: its error model, its one device, and its memory.
extern "C" const sw_plugin_t sw_plugin = {
    "cpu",             // name
    ok,                // ok
    fail,              // fail
    cpu_last_message,  // last_message
    check_device,      // check_device
    cpu_resolve,       // resolve
    nullptr,           // is_device_ptr: device memory is host memory.
    nullptr,           // speed: work runs at host speed,
    nullptr,           // link_bytes_per_s: and copies are unpaced.
    nullptr,           // operators: torch runs CPU kernels on cpu memory in place.
};

namespace {

// --- Entries ---------------------------------------------------------------------------------------------

hal_status_t cpu_initialize(const hal_plugin_init_args_t* args) {
  std::string config;
  if (args && HAL_STRUCT_HAS_FIELD(args, hal_plugin_init_args_t, config) && args->config) config = args->config;
  g_device.limit = 0;
  if (!config.empty()) {
    if (config.compare(0, 4, "mem=") != 0 || (g_device.limit = sw_parse_size(config.c_str() + 4)) == 0) {
      return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: bad config '%s' (expected empty or mem=SIZE, e.g. mem=64MiB)",
                  config.c_str());
    }
  }
  read_cpuinfo(g_device);
  g_device.physical_bytes = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
  static std::once_flag fork_handlers;
  std::call_once(fork_handlers, register_fork_handlers);
  g_device.initialized = true;
  return ok();
}

void cpu_shutdown() { g_device.initialized = false; }

hal_status_t cpu_device_count(int32_t* out_count) {
  if (!out_count) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: out_count is NULL");
  *out_count = g_device.initialized ? 1 : 0;
  return g_device.initialized ? ok() : fail(HAL_STATUS_UNAVAILABLE, "cpu: plugin is not initialized");
}

uint64_t total_bytes() { return g_device.limit ? g_device.limit : g_device.physical_bytes; }

hal_status_t cpu_device_get_properties(int32_t device, hal_device_properties_t* out) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out || out->struct_size < offsetof(hal_device_properties_t, name)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: properties is NULL or its struct_size is too small");
  }
  hal_device_properties_t p{};
  std::snprintf(p.name, sizeof(p.name), "%s", g_device.name.c_str());
  std::snprintf(p.vendor, sizeof(p.vendor), "%s", g_device.vendor.c_str());
  p.kind = HAL_DEVICE_KIND_CPU;
  p.flags = HAL_DEVICE_FLAG_HOST_ADDRESSABLE | HAL_DEVICE_FLAG_MAPPABLE;
  p.total_memory_bytes = total_bytes();  // Throughput figures stay 0 (unknown); relative_speed 0: not emulated.
  size_t size = std::min(out->struct_size, sizeof(p));  // Write only what the caller's struct holds.
  std::memcpy(reinterpret_cast<char*>(out) + sizeof(size_t), reinterpret_cast<char*>(&p) + sizeof(size_t),
              size - sizeof(size_t));
  return ok();
}

// MemAvailable from /proc/meminfo, in bytes; 0 if unreadable.
uint64_t mem_available() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    meminfo.ignore(64, '\n');
  }
  return 0;
}

hal_status_t cpu_device_get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out_free || !out_total) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memory info outputs are NULL");
  std::lock_guard<std::mutex> lock(g_device.mutex);
  *out_total = total_bytes();
  *out_free = g_device.limit ? g_device.limit - std::min(g_device.in_use, g_device.limit)
                             : std::min(mem_available(), *out_total);
  return ok();
}

hal_status_t cpu_memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out_ptr || size == 0) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memory_allocate needs size > 0 and out_ptr");
  std::lock_guard<std::mutex> lock(g_device.mutex);
  // in_use may exceed a limit set by a later initialize; compare without unsigned wrap-around.
  if (g_device.limit && (g_device.in_use > g_device.limit || size > g_device.limit - g_device.in_use)) {
    return fail(HAL_STATUS_OUT_OF_MEMORY,
                "cpu: out of memory: requested %llu bytes, %llu bytes in use of a limit of %llu bytes (%llu free)",
                (unsigned long long)size, (unsigned long long)g_device.in_use, (unsigned long long)g_device.limit,
                (unsigned long long)(g_device.limit - g_device.in_use));
  }
  void* ptr = std::aligned_alloc(256, (size + 255) / 256 * 256);
  if (!ptr) return fail(HAL_STATUS_OUT_OF_MEMORY, "cpu: out of host memory allocating %llu bytes", (unsigned long long)size);
  g_device.allocations[reinterpret_cast<uintptr_t>(ptr)] = size;
  g_device.in_use += size;
  *out_ptr = ptr;
  return ok();
}

hal_status_t cpu_memory_free(int32_t device, void* ptr) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  std::lock_guard<std::mutex> lock(g_device.mutex);
  auto it = g_device.allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == g_device.allocations.end()) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memory_free(%p): not an allocation of cpu:0", ptr);
  }
  g_device.in_use -= it->second;
  g_device.allocations.erase(it);
  std::free(ptr);
  return ok();
}

hal_status_t cpu_host_allocate(uint64_t size, void** out_ptr) {
  if (!out_ptr || size == 0) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: host_allocate needs size > 0 and out_ptr");
  *out_ptr = std::aligned_alloc(256, (size + 255) / 256 * 256);
  return *out_ptr ? ok() : fail(HAL_STATUS_OUT_OF_MEMORY, "cpu: host_allocate(%llu bytes)", (unsigned long long)size);
}

hal_status_t cpu_host_free(void* ptr) {
  std::free(ptr);
  return ok();
}

// Device memory is host memory: a mapping is the pointer itself, once checked.
hal_status_t cpu_memory_map(int32_t device, void* device_ptr, uint64_t size, void** out_host_ptr) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out_host_ptr || !g_device.owns(device_ptr, size)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memory_map(%p, %llu): not inside an allocation", device_ptr,
                (unsigned long long)size);
  }
  *out_host_ptr = device_ptr;
  return ok();
}

hal_status_t cpu_memory_unmap(int32_t device, void* host_ptr, uint64_t size) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!g_device.owns(host_ptr, size)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memory_unmap(%p, %llu): not a mapping", host_ptr,
                (unsigned long long)size);
  }
  return ok();
}

// The "hal.topology" extension (hal/topology.h, ABI 1.2): cpu:0 is the host's own memory. It has no peers.
hal_status_t cpu_device_links(int32_t device, hal_link_t* out_links, uint64_t capacity, uint64_t* out_count) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out_count || (capacity > 0 && !out_links)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: device_links needs out_count (and out_links for capacity > 0)");
  }
  if (capacity > 0) out_links[0] = {HAL_LINK_PEER_HOST, HAL_LINK_KIND_SAME_MEMORY, HAL_LINK_FLAG_PEER_ACCESS, 0, 0, 0};
  *out_count = 1;
  return ok();
}

const hal_topology_extension_t g_topology = {
    {sizeof(hal_topology_extension_t), HAL_TOPOLOGY_EXTENSION_NAME, HAL_TOPOLOGY_EXTENSION_VERSION, 0, nullptr},
    cpu_device_links};

hal_plugin_api_t make_api() {
  hal_plugin_api_t api{};
  api.struct_size = sizeof(hal_plugin_api_t);
  api.abi_major = HAL_ABI_VERSION_MAJOR;
  api.abi_minor = HAL_ABI_VERSION_MINOR;
  api.name = "cpu";
  api.version = HAL_PLUGIN_VERSION;
  api.initialize = cpu_initialize;
  api.shutdown = cpu_shutdown;
  api.get_last_error = cpu_get_last_error;
  api.device_count = cpu_device_count;
  api.device_get_properties = cpu_device_get_properties;
  api.device_get_memory_info = cpu_device_get_memory_info;
  api.memory_allocate = cpu_memory_allocate;
  api.memory_free = cpu_memory_free;
  api.stream_create = sw_stream_create;
  api.stream_destroy = sw_stream_destroy;
  api.stream_synchronize = sw_stream_synchronize;
  api.stream_query = sw_stream_query;
  api.stream_wait_event = sw_stream_wait_event;
  api.event_create = sw_event_create;
  api.event_destroy = sw_event_destroy;
  api.event_record = sw_event_record;
  api.event_synchronize = sw_event_synchronize;
  api.event_query = sw_event_query;
  api.event_elapsed_time = sw_event_elapsed_time;
  api.memcpy_h2d_async = sw_memcpy_h2d_async;
  api.memcpy_d2h_async = sw_memcpy_d2h_async;
  api.memcpy_d2d_async = sw_memcpy_d2d_async;
  api.host_allocate = cpu_host_allocate;
  api.host_free = cpu_host_free;
  api.memcpy_peer_async = sw_memcpy_peer_async;
  api.memset_async = sw_memset_async;
  api.launch_host_func = sw_launch_host_func;
  api.memory_map = cpu_memory_map;
  api.memory_unmap = cpu_memory_unmap;
  // Collectives among processes of this host, each with its cpu:0 (shared memory, devices/common).
  api.comm_get_unique_id = sw_comm_get_unique_id;
  api.comm_init_rank = sw_comm_init_rank;
  api.comm_destroy = sw_comm_destroy;
  api.comm_abort = sw_comm_abort;
  api.allreduce = sw_allreduce;
  api.allgather = sw_allgather;
  api.reduce_scatter = sw_reduce_scatter;
  api.broadcast = sw_broadcast;
  api.send = sw_send;
  api.recv = sw_recv;
  api.extensions = &g_topology.base;  // ABI 1.2
  return api;
}

const hal_plugin_api_t g_api = make_api();

}  // namespace

extern "C" HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) { return &g_api; }
