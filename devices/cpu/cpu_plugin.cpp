// cpu: the reference device, one device (cpu:0) backed by host memory.
//
// It always runs, so HAL's upper layers are tested on any machine. Memory is ordinary aligned host
// memory (HOST_ADDRESSABLE: device pointers may be dereferenced; memory_map returns the pointer itself).
// Streams keep the full asynchronous semantics of an accelerator: each has a worker thread running a FIFO
// of closures, events are fences signalled by that worker, and errors found by the worker are sticky.
//
// Config (hal_plugin_init_args_t.config): empty, or "mem=SIZE" (e.g. "mem=64MiB") to cap the memory the
// device may allocate, which makes out-of-memory paths testable.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>

#include "hal/hal.h"

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

uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
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

// "512MiB", "2GiB", "1048576"; 0 on error.
uint64_t parse_size(const std::string& text) {
  static const std::pair<const char*, double> units[] = {{"", 1.0}, {"B", 1.0}, {"KiB", 1024.0},
                                                         {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                                                         {"TiB", 1099511627776.0}};
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !(value > 0)) return 0;
  for (const auto& [suffix, scale] : units) {
    if (std::strcmp(end, suffix) == 0 && value * scale >= 1.0 && value * scale < 18e18) {
      return static_cast<uint64_t>(value * scale);
    }
  }
  return 0;
}

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

// --- Fences, streams and events --------------------------------------------------------------------------

// What an event_record captures: completes when the stream's worker reaches it. Shared by the event and
// the queued closures, so re-recording or destroying an event never disturbs work already queued.
struct Fence {
  bool done = false;
  uint64_t done_ns = 0;
  hal_status_t status = HAL_STATUS_OK;  // The stream's sticky error when it completed.
  std::string message;
};
std::mutex g_fence_mutex;  // Guards every Fence and hal_event_s::fence.
std::condition_variable g_fence_done;

constexpr uint32_t kStreamMagic = 0x53555043;  // "CPUS"

// Waking a sleeping thread costs several microseconds, and a short copy followed by a synchronize pays it
// twice. The worker and synchronize therefore poll for up to this long before they sleep (as GPU drivers
// spin before blocking); bounded, so an idle stream costs no CPU.
constexpr auto kSpin = std::chrono::microseconds(30);

template <typename Ready>
void spin_until(Ready ready) {
  auto until = std::chrono::steady_clock::now() + kSpin;
  for (unsigned i = 1; !ready(); ++i) {
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}
constexpr uint32_t kEventMagic = 0x45555043;   // "CPUE"

}  // namespace

struct hal_stream_s {
  uint32_t magic = kStreamMagic;
  std::mutex mutex;  // Guards everything below.
  std::condition_variable changed;
  std::deque<std::function<void()>> queue;
  bool busy = false;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> outstanding{0};  // Ops queued or running; polled without the lock by spin_until.
  hal_status_t error = HAL_STATUS_OK;  // Sticky, set by the worker.
  std::string error_message;
  std::thread worker{[this] { run(); }};  // Last, so it starts after the members above exist.

  void run() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      if (queue.empty() && !stopping) {
        lock.unlock();
        spin_until([this] { return outstanding.load(std::memory_order_acquire) > 0 || stopping.load(); });
        lock.lock();
      }
      changed.wait(lock, [this] { return !queue.empty() || stopping; });
      if (queue.empty()) return;  // Stopping, and drained.
      auto op = std::move(queue.front());
      queue.pop_front();
      busy = true;
      lock.unlock();
      op();
      lock.lock();
      busy = false;
      outstanding.fetch_sub(1, std::memory_order_release);
      changed.notify_all();
    }
  }

  void push(std::function<void()> op) {
    std::lock_guard<std::mutex> lock(mutex);
    queue.push_back(std::move(op));
    outstanding.fetch_add(1, std::memory_order_release);
    changed.notify_all();
  }

  // Queues device work: skipped once the stream has failed; a non-empty result fails the stream.
  void push_work(const char* entry, std::function<std::string()> work) {
    push([this, entry, work = std::move(work)] {
      if (failed()) return;
      std::string why = work();
      std::lock_guard<std::mutex> lock(mutex);
      if (!why.empty() && error == HAL_STATUS_OK) {
        error = HAL_STATUS_DEVICE_ERROR;
        error_message = std::string("cpu: ") + entry + " queued on cpu:0 failed: " + why;
      }
    });
  }

  bool failed() {
    std::lock_guard<std::mutex> lock(mutex);
    return error != HAL_STATUS_OK;
  }
  hal_status_t sticky() { return fail(error, "%s", error_message.c_str()); }  // With |mutex| held.
};

struct hal_event_s {
  uint32_t magic = kEventMagic;
  uint32_t flags = 0;
  std::shared_ptr<Fence> fence;  // The latest record; null if never recorded.
};

namespace {

hal_status_t check(hal_stream_t stream) {
  return stream && stream->magic == kStreamMagic ? HAL_STATUS_OK
                                                 : fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: not a cpu stream");
}
hal_status_t check(hal_event_t event) {
  return event && event->magic == kEventMagic ? HAL_STATUS_OK
                                              : fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: not a cpu event");
}

// Common start of the enqueueing entries: a valid stream that has not failed.
hal_status_t check_enqueue(hal_stream_t stream) {
  if (hal_status_t status = check(stream); status != HAL_STATUS_OK) return status;
  std::lock_guard<std::mutex> lock(stream->mutex);
  return stream->error != HAL_STATUS_OK ? stream->sticky() : HAL_STATUS_OK;
}

// --- Entries ---------------------------------------------------------------------------------------------

hal_status_t cpu_initialize(const hal_plugin_init_args_t* args) {
  std::string config;
  if (args && HAL_STRUCT_HAS_FIELD(args, hal_plugin_init_args_t, config) && args->config) config = args->config;
  g_device.limit = 0;
  if (!config.empty()) {
    if (config.compare(0, 4, "mem=") != 0 || (g_device.limit = parse_size(config.substr(4))) == 0) {
      return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: bad config '%s' (expected empty or mem=SIZE, e.g. mem=64MiB)",
                  config.c_str());
    }
  }
  read_cpuinfo(g_device);
  g_device.physical_bytes = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
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

hal_status_t cpu_stream_create(int32_t device, hal_stream_t* out_stream) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out_stream) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: out_stream is NULL");
  try {
    *out_stream = new hal_stream_s;
  } catch (const std::exception& e) {  // std::bad_alloc, or std::system_error from std::thread.
    return fail(HAL_STATUS_DEVICE_ERROR, "cpu: stream_create: %s", e.what());
  }
  return ok();
}

hal_status_t cpu_stream_destroy(hal_stream_t stream) {
  if (hal_status_t status = check(stream); status != HAL_STATUS_OK) return status;
  {
    std::lock_guard<std::mutex> lock(stream->mutex);
    stream->stopping = true;  // The worker drains the queue first.
    stream->changed.notify_all();
  }
  stream->worker.join();
  stream->magic = 0;
  delete stream;
  return ok();
}

hal_status_t cpu_stream_synchronize(hal_stream_t stream) {
  if (hal_status_t status = check(stream); status != HAL_STATUS_OK) return status;
  spin_until([stream] { return stream->outstanding.load(std::memory_order_acquire) == 0; });
  std::unique_lock<std::mutex> lock(stream->mutex);
  stream->changed.wait(lock, [stream] { return stream->queue.empty() && !stream->busy; });
  return stream->error != HAL_STATUS_OK ? stream->sticky() : ok();
}

hal_status_t cpu_stream_query(hal_stream_t stream) {
  if (hal_status_t status = check(stream); status != HAL_STATUS_OK) return status;
  std::lock_guard<std::mutex> lock(stream->mutex);
  if (stream->error != HAL_STATUS_OK) return stream->sticky();
  if (!stream->queue.empty() || stream->busy) return fail(HAL_STATUS_NOT_READY, "cpu: stream has queued work");
  return ok();
}

hal_status_t cpu_stream_wait_event(hal_stream_t stream, hal_event_t event) {
  if (hal_status_t status = check(event); status != HAL_STATUS_OK) return status;
  if (hal_status_t status = check_enqueue(stream); status != HAL_STATUS_OK) return status;
  std::shared_ptr<Fence> fence;
  {
    std::lock_guard<std::mutex> lock(g_fence_mutex);
    fence = event->fence;  // The record current now; later records do not affect this wait.
  }
  if (fence) {
    stream->push([fence] {
      std::unique_lock<std::mutex> lock(g_fence_mutex);
      g_fence_done.wait(lock, [&] { return fence->done; });
    });
  }
  return ok();
}

hal_status_t cpu_launch_host_func(hal_stream_t stream, hal_host_fn fn, void* user_data) {
  if (!fn) return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: launch_host_func: fn is NULL");
  if (hal_status_t status = check_enqueue(stream); status != HAL_STATUS_OK) return status;
  stream->push_work("launch_host_func", [fn, user_data] {
    fn(user_data);
    return std::string();
  });
  return ok();
}

hal_status_t cpu_event_create(int32_t device, uint32_t flags, hal_event_t* out_event) {
  if (hal_status_t status = check_device(device); status != HAL_STATUS_OK) return status;
  if (!out_event || (flags & ~uint32_t(HAL_EVENT_FLAG_TIMING))) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: event_create: out_event is NULL or flags 0x%x unknown", flags);
  }
  *out_event = new (std::nothrow) hal_event_s;
  if (!*out_event) return fail(HAL_STATUS_OUT_OF_MEMORY, "cpu: event_create: out of host memory");
  (*out_event)->flags = flags;
  return ok();
}

hal_status_t cpu_event_destroy(hal_event_t event) {
  if (hal_status_t status = check(event); status != HAL_STATUS_OK) return status;
  std::lock_guard<std::mutex> lock(g_fence_mutex);  // Queued closures keep their own fence references.
  event->magic = 0;
  delete event;
  return ok();
}

hal_status_t cpu_event_record(hal_event_t event, hal_stream_t stream) {
  if (hal_status_t status = check(event); status != HAL_STATUS_OK) return status;
  if (hal_status_t status = check_enqueue(stream); status != HAL_STATUS_OK) return status;
  auto fence = std::make_shared<Fence>();
  {
    std::lock_guard<std::mutex> lock(g_fence_mutex);
    event->fence = fence;
  }
  // Completes even on a failed stream (carrying the error), so nobody waits for it forever.
  stream->push([stream, fence] {
    hal_status_t status;
    std::string message;
    {
      std::lock_guard<std::mutex> lock(stream->mutex);
      status = stream->error;
      message = stream->error_message;
    }
    std::lock_guard<std::mutex> lock(g_fence_mutex);
    fence->done_ns = now_ns();
    fence->status = status;
    fence->message = std::move(message);
    fence->done = true;
    g_fence_done.notify_all();
  });
  return ok();
}

hal_status_t cpu_event_synchronize(hal_event_t event) {
  if (hal_status_t status = check(event); status != HAL_STATUS_OK) return status;
  std::unique_lock<std::mutex> lock(g_fence_mutex);
  std::shared_ptr<Fence> fence = event->fence;
  if (!fence) return ok();
  g_fence_done.wait(lock, [&] { return fence->done; });
  return fence->status != HAL_STATUS_OK ? fail(fence->status, "%s", fence->message.c_str()) : ok();
}

hal_status_t cpu_event_query(hal_event_t event) {
  if (hal_status_t status = check(event); status != HAL_STATUS_OK) return status;
  std::lock_guard<std::mutex> lock(g_fence_mutex);
  return !event->fence || event->fence->done ? ok() : fail(HAL_STATUS_NOT_READY, "cpu: event has not completed");
}

hal_status_t cpu_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  if (hal_status_t status = check(start); status != HAL_STATUS_OK) return status;
  if (hal_status_t status = check(end); status != HAL_STATUS_OK) return status;
  if (!out_ms || !(start->flags & end->flags & HAL_EVENT_FLAG_TIMING)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: event_elapsed_time needs out_ms and two timing events");
  }
  std::lock_guard<std::mutex> lock(g_fence_mutex);
  if (!start->fence || !end->fence) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: event_elapsed_time: an event was never recorded");
  }
  if (!start->fence->done || !end->fence->done) {
    return fail(HAL_STATUS_NOT_READY, "cpu: event_elapsed_time: an event has not completed");
  }
  *out_ms = float((double(end->fence->done_ns) - double(start->fence->done_ns)) / 1e6);
  return ok();
}

// Copies: device-side pointers are checked at the call (INVALID_ARGUMENT) and again when the worker runs
// the copy (memory freed while in use then fails the stream instead of corrupting the heap).
hal_status_t queue_copy(hal_stream_t stream, const char* entry, void* dst, bool dst_on_device, const void* src,
                        bool src_on_device, uint64_t size) {
  if (hal_status_t status = check_enqueue(stream); status != HAL_STATUS_OK) return status;
  if (size == 0) {
    stream->push([] {});  // A no-op that still orders.
    return ok();
  }
  auto valid = [=] {
    return dst && src && (!dst_on_device || g_device.owns(dst, size)) && (!src_on_device || g_device.owns(src, size));
  };
  if (!valid()) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: %s(%p <- %p, %llu bytes): a device pointer is not inside a cpu:0 "
                "allocation", entry, dst, src, (unsigned long long)size);
  }
  stream->push_work(entry, [=] {
    if (!valid()) return std::string("a device pointer was freed before the copy ran");
    std::memcpy(dst, src, size);
    return std::string();
  });
  return ok();
}

hal_status_t cpu_memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_h2d_async", dst, true, src, false, size);
}
hal_status_t cpu_memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_d2h_async", dst, false, src, true, size);
}
hal_status_t cpu_memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_d2d_async", dst, true, src, true, size);
}
hal_status_t cpu_memcpy_peer_async(hal_stream_t stream, void* dst, int32_t dst_device, const void* src,
                                   int32_t src_device, uint64_t size) {
  if (dst_device != 0 || src_device != 0) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memcpy_peer_async: the plugin has only device 0");
  }
  return queue_copy(stream, "memcpy_peer_async", dst, true, src, true, size);
}

hal_status_t cpu_memset_async(hal_stream_t stream, void* dst, uint8_t value, uint64_t size) {
  if (hal_status_t status = check_enqueue(stream); status != HAL_STATUS_OK) return status;
  if (size > 0 && !g_device.owns(dst, size)) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, "cpu: memset_async(%p, %llu bytes): not inside an allocation", dst,
                (unsigned long long)size);
  }
  stream->push_work("memset_async", [=] {
    if (size > 0 && !g_device.owns(dst, size)) return std::string("the memory was freed before the memset ran");
    std::memset(dst, value, size);
    return std::string();
  });
  return ok();
}

hal_plugin_api_t make_api() {
  hal_plugin_api_t api{};
  api.struct_size = sizeof(hal_plugin_api_t);
  api.abi_major = HAL_ABI_VERSION_MAJOR;
  api.abi_minor = HAL_ABI_VERSION_MINOR;
  api.name = "cpu";
  api.version = "0.1.0";
  api.initialize = cpu_initialize;
  api.shutdown = cpu_shutdown;
  api.get_last_error = cpu_get_last_error;
  api.device_count = cpu_device_count;
  api.device_get_properties = cpu_device_get_properties;
  api.device_get_memory_info = cpu_device_get_memory_info;
  api.memory_allocate = cpu_memory_allocate;
  api.memory_free = cpu_memory_free;
  api.stream_create = cpu_stream_create;
  api.stream_destroy = cpu_stream_destroy;
  api.stream_synchronize = cpu_stream_synchronize;
  api.stream_query = cpu_stream_query;
  api.stream_wait_event = cpu_stream_wait_event;
  api.event_create = cpu_event_create;
  api.event_destroy = cpu_event_destroy;
  api.event_record = cpu_event_record;
  api.event_synchronize = cpu_event_synchronize;
  api.event_query = cpu_event_query;
  api.event_elapsed_time = cpu_event_elapsed_time;
  api.memcpy_h2d_async = cpu_memcpy_h2d_async;
  api.memcpy_d2h_async = cpu_memcpy_d2h_async;
  api.memcpy_d2d_async = cpu_memcpy_d2d_async;
  api.host_allocate = cpu_host_allocate;
  api.host_free = cpu_host_free;
  api.memcpy_peer_async = cpu_memcpy_peer_async;
  api.memset_async = cpu_memset_async;
  api.launch_host_func = cpu_launch_host_func;
  api.memory_map = cpu_memory_map;
  api.memory_unmap = cpu_memory_unmap;
  return api;  // Collectives: none (a single device has nobody to talk to).
}

const hal_plugin_api_t g_api = make_api();

}  // namespace

extern "C" HAL_PLUGIN_EXPORT const hal_plugin_api_t* hal_plugin_get_api(void) { return &g_api; }
