#include "runtime/validation.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "runtime/error.h"

namespace hal::validation {
namespace {

constexpr int kSlots = 32;
constexpr uint64_t kAlignment = 256;       // memory.h: "aligned to at least 256 bytes".
constexpr size_t kDeadHistory = 1 << 16;   // Freed allocations and destroyed handles remembered, per kind.
constexpr uint64_t kPrintedViolations = 20;

// --- Formatting --------------------------------------------------------------------------------------------

std::string hex(const void* ptr) {
  if (ptr == nullptr) return "NULL";
  char text[32];
  std::snprintf(text, sizeof(text), "0x%" PRIxPTR, reinterpret_cast<uintptr_t>(ptr));
  return text;
}
std::string dec(int64_t value) { return std::to_string(value); }
std::string udec(uint64_t value) { return std::to_string(value); }
std::string at_call(uint64_t call) { return "call #" + udec(call); }

uintptr_t addr(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr); }

// Element size of |dtype|, 0 when unknown (size checks are then skipped: the plugin refuses the dtype).
uint64_t dtype_size(hal_dtype_t dtype) { return hal_dtype_size(dtype); }

// |a| * |b|, or nullopt on overflow.
std::optional<uint64_t> mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// --- What is tracked ---------------------------------------------------------------------------------------

struct Allocation {
  int32_t device;
  uint64_t size;
  uint64_t call;  // The memory_allocate (or host_allocate) call.
};
struct FreedAllocation {
  Allocation allocation;
  uint64_t free_call;
};
struct Mapping {
  int32_t device;
  const void* device_ptr;
  uint64_t count;  // memory_map calls not yet balanced by memory_unmap.
  uint64_t call;
};
struct Handle {
  int32_t device;
  uint64_t call;               // The create call.
  int32_t nranks = 0, rank = 0;  // Communicators.
  const void* program = nullptr;  // Kernels: their program.
};

// Live handles of one kind (streams, events, ...) and the recently destroyed ones, to say "destroyed at".
class Handles {
 public:
  explicit Handles(const char* kind, const char* destroy) : kind_(kind), destroy_(destroy) {}
  const char* kind() const { return kind_; }
  const Handle* find(const void* h) const {
    auto it = live_.find(h);
    return it == live_.end() ? nullptr : &it->second;
  }
  // Why |h| is not a live handle of this kind: destroyed (when), or never created.
  std::string why_dead(const char* name, const void* h) const {
    if (h == nullptr) return std::string(name) + " is NULL";
    auto it = dead_.find(h);
    if (it != dead_.end()) {
      return std::string(name) + " " + hex(h) + " was destroyed by " + destroy_ + " at " + at_call(it->second) +
             " (a use after destroy)";
    }
    return std::string(name) + " " + hex(h) + " is not a live " + kind_ + " of this plugin (never created by it)";
  }
  void add(const void* h, Handle info) {
    dead_.erase(h);
    live_[h] = info;
  }
  // Moves |h| to the destroyed ones; returns what it was.
  Handle kill(const void* h, uint64_t call) {
    Handle info = live_.at(h);
    live_.erase(h);
    dead_[h] = call;
    order_.push_back(h);
    while (order_.size() > kDeadHistory) {
      dead_.erase(order_.front());
      order_.pop_front();
    }
    return info;
  }
  // Undoes kill (the destroy call failed): the handle is live again.
  void revive(const void* h, Handle info) {
    dead_.erase(h);
    live_[h] = info;
  }
  const std::unordered_map<const void*, Handle>& live() const { return live_; }

 private:
  const char* kind_;
  const char* destroy_;
  std::unordered_map<const void*, Handle> live_;
  std::unordered_map<const void*, uint64_t> dead_;  // -> the destroy call.
  std::deque<const void*> order_;
};

// Allocations by base address, live and recently freed.
class Allocations {
 public:
  // The live allocation containing |p|, or end().
  std::map<uintptr_t, Allocation>::const_iterator containing(uintptr_t p) const { return find_in(live_, p); }
  std::map<uintptr_t, FreedAllocation>::const_iterator freed_containing(uintptr_t p) const {
    return find_in(freed_, p);
  }
  bool is_live(std::map<uintptr_t, Allocation>::const_iterator it) const { return it != live_.end(); }
  bool is_freed(std::map<uintptr_t, FreedAllocation>::const_iterator it) const { return it != freed_.end(); }
  // A live allocation that overlaps [p, p + size), or end().
  std::map<uintptr_t, Allocation>::const_iterator overlapping(uintptr_t p, uint64_t size) const {
    auto it = live_.lower_bound(p);
    if (it != live_.end() && it->first < p + size) return it;
    if (it != live_.begin() && std::prev(it)->first + std::prev(it)->second.size > p) return std::prev(it);
    return live_.end();
  }
  void add(uintptr_t p, Allocation a) {
    // Memory handed out again is no longer "freed".
    for (auto it = freed_.lower_bound(p); it != freed_.end() && it->first < p + a.size;) it = freed_.erase(it);
    auto before = freed_.lower_bound(p);
    if (before != freed_.begin() && std::prev(before)->first + std::prev(before)->second.allocation.size > p) {
      freed_.erase(std::prev(before));
    }
    live_[p] = a;
  }
  void free(uintptr_t p, uint64_t call) {
    auto it = live_.find(p);
    freed_[p] = {it->second, call};
    live_.erase(it);
    order_.push_back(p);
    while (order_.size() > kDeadHistory) {  // Bounded: the oldest records go (one may be a newer free).
      freed_.erase(order_.front());
      order_.pop_front();
    }
  }
  void revive(uintptr_t p, Allocation a) {
    freed_.erase(p);
    live_[p] = a;
  }
  const std::map<uintptr_t, Allocation>& live() const { return live_; }

 private:
  template <typename Map>
  static typename Map::const_iterator find_in(const Map& map, uintptr_t p) {
    auto it = map.upper_bound(p);
    if (it == map.begin()) return map.end();
    --it;
    const uint64_t size = size_of(it->second);
    return p - it->first < std::max<uint64_t>(size, 1) ? it : map.end();
  }
  static uint64_t size_of(const Allocation& a) { return a.size; }
  static uint64_t size_of(const FreedAllocation& f) { return f.allocation.size; }

  std::map<uintptr_t, Allocation> live_;
  std::map<uintptr_t, FreedAllocation> freed_;
  std::deque<uintptr_t> order_;
};

thread_local std::array<std::string, kSlots> t_messages;  // The layer's last error, per slot and thread.

// Appends |text| to the file HAL_VALIDATE_LOG names, if any (violations of child processes whose stderr a
// test captures still reach it).
void log_to_file(const std::string& text) {
  const char* path = std::getenv("HAL_VALIDATE_LOG");
  if (path == nullptr || *path == '\0') return;
  if (FILE* file = std::fopen(path, "a")) {
    std::fputs(text.c_str(), file);
    std::fclose(file);
  }
}

bool abort_on_violation() {
  const char* value = std::getenv("HAL_VALIDATE");
  return value != nullptr && std::strcmp(value, "abort") == 0;
}

// --- The layer of one plugin -------------------------------------------------------------------------------

class Validator {
 public:
  Validator(int slot, const hal_plugin_api_t& real, std::string plugin)
      : slot_(slot), real_(real), plugin_(std::move(plugin)) {}

  Report report(const Held& held);

  // --- Entries, in table order. Each: begin, check arguments, call, check the result. ---

  hal_status_t initialize(const hal_plugin_init_args_t* args) {
    const uint64_t call = begin();
    auto sig = [&] { return "initialize(args=" + hex(args) + ")"; };
    if (args == nullptr) return invalid(call, sig(), "args is NULL");
    return result(call, sig, real_.initialize(args));
  }

  void shutdown() {
    const uint64_t call = begin();
    {
      // plugin.h: "every handle and allocation has been released" before shutdown.
      const Report r = report(Held{});
      if (!r.leaks.empty() || !r.live.empty()) {
        std::string text = "shutdown() with objects still live (plugin.h: every handle and allocation must be "
                           "released before shutdown):";
        for (const std::string& leak : r.leaks) text += "\n  leaked: " + leak;
        for (const std::string& live : r.live) text += "\n  still live: " + live;
        record(call, text);
      }
    }
    real_.shutdown();
  }

  size_t get_last_error(char* buffer, size_t capacity, int32_t* out_native) {
    const std::string& message = t_messages[slot_];
    if (message.empty()) return real_.get_last_error(buffer, capacity, out_native);
    if (capacity > 0 && buffer != nullptr) {
      const size_t n = std::min(message.size(), capacity - 1);
      std::memcpy(buffer, message.data(), n);
      buffer[n] = '\0';
    }
    if (out_native != nullptr) *out_native = 0;
    return message.size();
  }

  hal_status_t device_count(int32_t* out_count) {
    const uint64_t call = begin();
    auto sig = [&] { return "device_count(out_count=" + hex(out_count) + ")"; };
    if (out_count == nullptr) return invalid(call, sig(), "out_count is NULL");
    const hal_status_t status = real_.device_count(out_count);
    if (status == HAL_STATUS_OK) {
      if (*out_count < 0) return broken(call, sig(), "returned OK with a negative count " + dec(*out_count));
      std::lock_guard<std::mutex> lock(mutex_);
      device_count_ = *out_count;
    }
    return result(call, sig, status);
  }

  hal_status_t device_get_properties(int32_t device, hal_device_properties_t* out) {
    const uint64_t call = begin();
    auto sig = [&] { return "device_get_properties(device=" + dec(device) + ", out_properties=" + hex(out) + ")"; };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (out == nullptr) return invalid(call, sig(), "out_properties is NULL");
    if (out->struct_size == 0) return invalid(call, sig(), "out_properties->struct_size is 0 (the caller sets it)");
    const size_t struct_size = out->struct_size;
    const hal_status_t status = real_.device_get_properties(device, out);
    if (status == HAL_STATUS_OK) {
      if (out->struct_size != struct_size) {
        return broken(call, sig(), "changed struct_size from " + udec(struct_size) + " to " + udec(out->struct_size));
      }
      if (HAL_STRUCT_HAS_FIELD(out, hal_device_properties_t, name) &&
          std::memchr(out->name, '\0', sizeof(out->name)) == nullptr) {
        return broken(call, sig(), "wrote a name that is not NUL-terminated within HAL_DEVICE_NAME_MAX");
      }
      if (HAL_STRUCT_HAS_FIELD(out, hal_device_properties_t, vendor) &&
          std::memchr(out->vendor, '\0', sizeof(out->vendor)) == nullptr) {
        return broken(call, sig(), "wrote a vendor that is not NUL-terminated within HAL_DEVICE_VENDOR_MAX");
      }
    }
    return result(call, sig, status);
  }

  hal_status_t device_get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "device_get_memory_info(device=" + dec(device) + ", out_free_bytes=" + hex(out_free) +
             ", out_total_bytes=" + hex(out_total) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (out_free == nullptr || out_total == nullptr) {
      return invalid(call, sig(), std::string(out_free == nullptr ? "out_free_bytes" : "out_total_bytes") + " is NULL");
    }
    const hal_status_t status = real_.device_get_memory_info(device, out_free, out_total);
    if (status == HAL_STATUS_OK && *out_free > *out_total) {
      return broken(call, sig(), "returned free " + udec(*out_free) + " bytes > total " + udec(*out_total) + " bytes");
    }
    return result(call, sig, status);
  }

  hal_status_t memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "memory_allocate(device=" + dec(device) + ", size_bytes=" + udec(size) + ", out_ptr=" + hex(out_ptr) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (size == 0) return invalid(call, sig(), "size_bytes is 0 (memory.h: > 0)");
    if (out_ptr == nullptr) return invalid(call, sig(), "out_ptr is NULL");
    const hal_status_t status = real_.memory_allocate(device, size, out_ptr);
    if (status != HAL_STATUS_OK) return result(call, sig, status);
    const uintptr_t p = addr(*out_ptr);
    if (p == 0) return broken(call, sig(), "returned OK with a NULL pointer");
    if (p % kAlignment != 0) {
      return broken(call, sig(), "returned " + hex(*out_ptr) + ", aligned to less than the 256 bytes memory.h promises");
    }
    if (size > UINTPTR_MAX - p) return broken(call, sig(), "returned " + hex(*out_ptr) + ", whose extent overflows");
    std::unique_lock<std::mutex> lock(mutex_);
    auto other = memory_.overlapping(p, size);
    if (memory_.is_live(other)) {
      const std::string text = "returned " + hex(*out_ptr) + ", which overlaps the live allocation at " +
                               hex(reinterpret_cast<void*>(other->first)) + " (" + udec(other->second.size) +
                               " bytes on device " + dec(other->second.device) + ", memory_allocate at " +
                               at_call(other->second.call) + ")";
      lock.unlock();
      return broken(call, sig(), text);
    }
    memory_.add(p, {device, size, call});
    return status;
  }

  hal_status_t memory_free(int32_t device, void* ptr) {
    const uint64_t call = begin();
    auto sig = [&] { return "memory_free(device=" + dec(device) + ", ptr=" + hex(ptr) + ")"; };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (ptr == nullptr) return invalid(call, sig(), "ptr is NULL");
    std::unique_lock<std::mutex> lock(mutex_);
    const uintptr_t p = addr(ptr);
    auto live = memory_.containing(p);
    if (!memory_.is_live(live) || live->first != p || live->second.device != device) {
      const std::string why = why_not_freeable(device, p);
      lock.unlock();
      return invalid(call, sig(), why);
    }
    for (const auto& [key, mapping] : mappings_) {
      if (mapping.count > 0 && addr(mapping.device_ptr) - p < live->second.size) {
        const std::string why = "ptr is still mapped at " + hex(key.first) + " (" + udec(key.second) +
                                " bytes, memory_map at " + at_call(mapping.call) +
                                "); memory.h: memory_unmap must come before the allocation is freed";
        lock.unlock();
        return invalid(call, sig(), why);
      }
    }
    // Forgotten before the plugin frees it: the plugin may hand the address out again to another thread.
    const Allocation allocation = live->second;
    memory_.free(p, call);
    lock.unlock();
    const hal_status_t status = real_.memory_free(device, ptr);
    if (status != HAL_STATUS_OK) {
      lock.lock();
      memory_.revive(p, allocation);
      lock.unlock();
    }
    return result(call, sig, status);
  }

  hal_status_t stream_create(int32_t device, hal_stream_t* out_stream) {
    const uint64_t call = begin();
    auto sig = [&] { return "stream_create(device=" + dec(device) + ", out_stream=" + hex(out_stream) + ")"; };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (out_stream == nullptr) return invalid(call, sig(), "out_stream is NULL");
    const hal_status_t status = real_.stream_create(device, out_stream);
    return created(call, sig, status, streams_, *out_stream, {device, call});
  }

  hal_status_t stream_destroy(hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] { return "stream_destroy(stream=" + hex(stream) + ")"; };
    return destroyed(call, sig, streams_, stream, "stream", [&] { return real_.stream_destroy(stream); });
  }

  hal_status_t stream_synchronize(hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] { return "stream_synchronize(stream=" + hex(stream) + ")"; };
    if (auto bad = check_live(streams_, "stream", stream)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.stream_synchronize(stream));
  }

  hal_status_t stream_query(hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] { return "stream_query(stream=" + hex(stream) + ")"; };
    if (auto bad = check_live(streams_, "stream", stream)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.stream_query(stream), /*not_ready_allowed=*/true);
  }

  hal_status_t stream_wait_event(hal_stream_t stream, hal_event_t event) {
    const uint64_t call = begin();
    auto sig = [&] { return "stream_wait_event(stream=" + hex(stream) + ", event=" + hex(event) + ")"; };
    if (auto bad = check_live(streams_, "stream", stream)) return invalid(call, sig(), *bad);
    if (auto bad = check_live(events_, "event", event)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.stream_wait_event(stream, event));
  }

  hal_status_t event_create(int32_t device, uint32_t flags, hal_event_t* out_event) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "event_create(device=" + dec(device) + ", flags=" + udec(flags) + ", out_event=" + hex(out_event) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (out_event == nullptr) return invalid(call, sig(), "out_event is NULL");
    const hal_status_t status = real_.event_create(device, flags, out_event);
    return created(call, sig, status, events_, *out_event, {device, call});
  }

  hal_status_t event_destroy(hal_event_t event) {
    const uint64_t call = begin();
    auto sig = [&] { return "event_destroy(event=" + hex(event) + ")"; };
    return destroyed(call, sig, events_, event, "event", [&] { return real_.event_destroy(event); });
  }

  hal_status_t event_record(hal_event_t event, hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] { return "event_record(event=" + hex(event) + ", stream=" + hex(stream) + ")"; };
    if (auto bad = check_live(events_, "event", event)) return invalid(call, sig(), *bad);
    if (auto bad = check_live(streams_, "stream", stream)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.event_record(event, stream));
  }

  hal_status_t event_synchronize(hal_event_t event) {
    const uint64_t call = begin();
    auto sig = [&] { return "event_synchronize(event=" + hex(event) + ")"; };
    if (auto bad = check_live(events_, "event", event)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.event_synchronize(event));
  }

  hal_status_t event_query(hal_event_t event) {
    const uint64_t call = begin();
    auto sig = [&] { return "event_query(event=" + hex(event) + ")"; };
    if (auto bad = check_live(events_, "event", event)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.event_query(event), /*not_ready_allowed=*/true);
  }

  hal_status_t event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "event_elapsed_time(start=" + hex(start) + ", end=" + hex(end) + ", out_ms=" + hex(out_ms) + ")";
    };
    if (auto bad = check_live(events_, "event", start, "start")) return invalid(call, sig(), *bad);
    if (auto bad = check_live(events_, "event", end, "end")) return invalid(call, sig(), *bad);
    if (out_ms == nullptr) return invalid(call, sig(), "out_ms is NULL");
    return result(call, sig, real_.event_elapsed_time(start, end, out_ms), /*not_ready_allowed=*/true);
  }

  hal_status_t memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
    const uint64_t call = begin();
    auto sig = [&] { return copy_sig("memcpy_h2d_async", stream, dst, src, size); };
    if (auto bad = check_copy(stream, dst, "dst", true, src, "src", false, size)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.memcpy_h2d_async(stream, dst, src, size));
  }

  hal_status_t memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
    const uint64_t call = begin();
    auto sig = [&] { return copy_sig("memcpy_d2h_async", stream, dst, src, size); };
    if (auto bad = check_copy(stream, dst, "dst", false, src, "src", true, size)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.memcpy_d2h_async(stream, dst, src, size));
  }

  hal_status_t memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
    const uint64_t call = begin();
    auto sig = [&] { return copy_sig("memcpy_d2d_async", stream, dst, src, size); };
    if (auto bad = check_copy(stream, dst, "dst", true, src, "src", true, size)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.memcpy_d2d_async(stream, dst, src, size));
  }

  hal_status_t host_allocate(uint64_t size, void** out_ptr) {
    const uint64_t call = begin();
    auto sig = [&] { return "host_allocate(size_bytes=" + udec(size) + ", out_ptr=" + hex(out_ptr) + ")"; };
    if (out_ptr == nullptr) return invalid(call, sig(), "out_ptr is NULL");
    const hal_status_t status = real_.host_allocate(size, out_ptr);
    if (status == HAL_STATUS_OK && *out_ptr != nullptr) {
      std::unique_lock<std::mutex> lock(mutex_);
      auto other = host_.overlapping(addr(*out_ptr), std::max<uint64_t>(size, 1));
      if (host_.is_live(other)) {
        const std::string text = "returned " + hex(*out_ptr) + ", which overlaps the live host allocation at " +
                                 hex(reinterpret_cast<void*>(other->first)) + " (host_allocate at " +
                                 at_call(other->second.call) + ")";
        lock.unlock();
        return broken(call, sig(), text);
      }
      host_.add(addr(*out_ptr), {-1, size, call});
    }
    return result(call, sig, status);
  }

  hal_status_t host_free(void* ptr) {
    const uint64_t call = begin();
    auto sig = [&] { return "host_free(ptr=" + hex(ptr) + ")"; };
    if (ptr == nullptr) return result(call, sig, real_.host_free(ptr));  // memory.h: host_free(NULL) does nothing.
    std::unique_lock<std::mutex> lock(mutex_);
    const uintptr_t p = addr(ptr);
    auto live = host_.containing(p);
    if (!host_.is_live(live) || live->first != p) {
      auto freed = host_.freed_containing(p);
      std::string why;
      if (host_.is_live(live)) {
        why = "ptr lies inside the host allocation at " + hex(reinterpret_cast<void*>(live->first)) + ", not at its start";
      } else if (host_.is_freed(freed) && freed->first == p) {
        why = "ptr was already freed by host_free at " + at_call(freed->second.free_call) + " (double free)";
      } else {
        why = "ptr was never returned by host_allocate of this plugin";
      }
      lock.unlock();
      return invalid(call, sig(), why);
    }
    const Allocation allocation = live->second;
    host_.free(p, call);
    lock.unlock();
    const hal_status_t status = real_.host_free(ptr);
    if (status != HAL_STATUS_OK) {
      std::lock_guard<std::mutex> relock(mutex_);
      host_.revive(p, allocation);
    }
    return result(call, sig, status);
  }

  hal_status_t memcpy_peer_async(hal_stream_t stream, void* dst, int32_t dst_device, const void* src,
                                 int32_t src_device, uint64_t size) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "memcpy_peer_async(stream=" + hex(stream) + ", dst=" + hex(dst) + ", dst_device=" + dec(dst_device) +
             ", src=" + hex(src) + ", src_device=" + dec(src_device) + ", size_bytes=" + udec(size) + ")";
    };
    if (auto bad = check_device(dst_device, "dst_device")) return invalid(call, sig(), *bad);
    if (auto bad = check_device(src_device, "src_device")) return invalid(call, sig(), *bad);
    std::unique_lock<std::mutex> lock(mutex_);
    const Handle* s = streams_.find(stream);
    std::optional<std::string> bad;
    if (s == nullptr) {
      bad = streams_.why_dead("stream", stream);
    } else if (s->device != dst_device && s->device != src_device) {
      bad = "stream belongs to device " + dec(s->device) + ", neither dst_device nor src_device (stream.h)";
    } else if (!(bad = range(dst, size, dst_device, "dst"))) {
      bad = range(src, size, src_device, "src");
    }
    lock.unlock();
    if (bad) return invalid(call, sig(), *bad);
    return result(call, sig, real_.memcpy_peer_async(stream, dst, dst_device, src, src_device, size));
  }

  hal_status_t memset_async(hal_stream_t stream, void* dst, uint8_t value, uint64_t size) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "memset_async(stream=" + hex(stream) + ", dst=" + hex(dst) + ", value=" + udec(value) +
             ", size_bytes=" + udec(size) + ")";
    };
    if (auto bad = check_copy(stream, dst, "dst", true, nullptr, nullptr, false, size)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.memset_async(stream, dst, value, size));
  }

  hal_status_t launch_host_func(hal_stream_t stream, hal_host_fn fn, void* user_data) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "launch_host_func(stream=" + hex(stream) + ", fn=" + hex(reinterpret_cast<void*>(fn)) +
             ", user_data=" + hex(user_data) + ")";
    };
    if (auto bad = check_live(streams_, "stream", stream)) return invalid(call, sig(), *bad);
    if (fn == nullptr) return invalid(call, sig(), "fn is NULL");
    return result(call, sig, real_.launch_host_func(stream, fn, user_data));
  }

  hal_status_t memory_map(int32_t device, void* device_ptr, uint64_t size, void** out_host_ptr) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "memory_map(device=" + dec(device) + ", device_ptr=" + hex(device_ptr) + ", size_bytes=" + udec(size) +
             ", out_host_ptr=" + hex(out_host_ptr) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (out_host_ptr == nullptr) return invalid(call, sig(), "out_host_ptr is NULL");
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto bad = range(device_ptr, size, device, "device_ptr");
      lock.unlock();
      if (bad) return invalid(call, sig(), *bad);
    }
    const hal_status_t status = real_.memory_map(device, device_ptr, size, out_host_ptr);
    if (status == HAL_STATUS_OK) {
      if (*out_host_ptr == nullptr && size > 0) return broken(call, sig(), "returned OK with a NULL host pointer");
      std::lock_guard<std::mutex> lock(mutex_);
      Mapping& m = mappings_[{*out_host_ptr, size}];
      if (m.count == 0) m = {device, device_ptr, 0, call};
      ++m.count;
    }
    return result(call, sig, status);
  }

  hal_status_t memory_unmap(int32_t device, void* host_ptr, uint64_t size) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "memory_unmap(device=" + dec(device) + ", host_ptr=" + hex(host_ptr) + ", size_bytes=" + udec(size) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto it = mappings_.find({host_ptr, size});
      if (it == mappings_.end() || it->second.count == 0 || it->second.device != device) {
        lock.unlock();
        return invalid(call, sig(), "(host_ptr, size_bytes) is not a live mapping of device " + dec(device) +
                                        " (memory_map never returned it with this size, or it was unmapped as "
                                        "often as it was mapped)");
      }
      if (--it->second.count == 0) mappings_.erase(it);
    }
    return result(call, sig, real_.memory_unmap(device, host_ptr, size));
  }

  hal_status_t comm_get_unique_id(hal_comm_unique_id_t* out_id) {
    const uint64_t call = begin();
    auto sig = [&] { return "comm_get_unique_id(out_id=" + hex(out_id) + ")"; };
    if (out_id == nullptr) return invalid(call, sig(), "out_id is NULL");
    return result(call, sig, real_.comm_get_unique_id(out_id));
  }

  hal_status_t comm_init_rank(int32_t device, int32_t nranks, const hal_comm_unique_id_t* id, int32_t rank,
                              const hal_comm_config_t* config, hal_comm_t* out_comm) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "comm_init_rank(device=" + dec(device) + ", nranks=" + dec(nranks) + ", id=" + hex(id) + ", rank=" +
             dec(rank) + ", config=" + hex(config) + ", out_comm=" + hex(out_comm) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (nranks < 1) return invalid(call, sig(), "nranks is below 1");
    if (rank < 0 || rank >= nranks) return invalid(call, sig(), "rank is not in [0, nranks)");
    if (id == nullptr) return invalid(call, sig(), "id is NULL");
    if (out_comm == nullptr) return invalid(call, sig(), "out_comm is NULL");
    Handle info{device, call, nranks, rank};
    const hal_status_t status = real_.comm_init_rank(device, nranks, id, rank, config, out_comm);
    return created(call, sig, status, comms_, *out_comm, info);
  }

  hal_status_t comm_destroy(hal_comm_t comm) {
    const uint64_t call = begin();
    auto sig = [&] { return "comm_destroy(comm=" + hex(comm) + ")"; };
    return destroyed(call, sig, comms_, comm, "comm", [&] { return real_.comm_destroy(comm); });
  }

  hal_status_t comm_abort(hal_comm_t comm) {
    const uint64_t call = begin();
    auto sig = [&] { return "comm_abort(comm=" + hex(comm) + ")"; };
    if (auto bad = check_live(comms_, "comm", comm)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.comm_abort(comm));
  }

  hal_status_t allreduce(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                         hal_reduce_op_t op, hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "allreduce(comm=" + hex(comm) + ", sendbuf=" + hex(sendbuf) + ", recvbuf=" + hex(recvbuf) + ", count=" +
             udec(count) + ", dtype=" + dec(dtype) + ", op=" + dec(op) + ", stream=" + hex(stream) + ")";
    };
    if (auto bad = check_collective(comm, stream, dtype, {{sendbuf, "sendbuf", count, 0}, {recvbuf, "recvbuf", count, 0}})) {
      return invalid(call, sig(), *bad);
    }
    return result(call, sig, real_.allreduce(comm, sendbuf, recvbuf, count, dtype, op, stream));
  }

  hal_status_t allgather(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t send_count, hal_dtype_t dtype,
                         hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "allgather(comm=" + hex(comm) + ", sendbuf=" + hex(sendbuf) + ", recvbuf=" + hex(recvbuf) +
             ", send_count=" + udec(send_count) + ", dtype=" + dec(dtype) + ", stream=" + hex(stream) + ")";
    };
    if (auto bad = check_collective(comm, stream, dtype,
                                    {{sendbuf, "sendbuf", send_count, 0}, {recvbuf, "recvbuf", send_count, 1}})) {
      return invalid(call, sig(), *bad);
    }
    return result(call, sig, real_.allgather(comm, sendbuf, recvbuf, send_count, dtype, stream));
  }

  hal_status_t reduce_scatter(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t recv_count,
                              hal_dtype_t dtype, hal_reduce_op_t op, hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "reduce_scatter(comm=" + hex(comm) + ", sendbuf=" + hex(sendbuf) + ", recvbuf=" + hex(recvbuf) +
             ", recv_count=" + udec(recv_count) + ", dtype=" + dec(dtype) + ", op=" + dec(op) + ", stream=" +
             hex(stream) + ")";
    };
    if (auto bad = check_collective(comm, stream, dtype,
                                    {{sendbuf, "sendbuf", recv_count, 1}, {recvbuf, "recvbuf", recv_count, 0}})) {
      return invalid(call, sig(), *bad);
    }
    return result(call, sig, real_.reduce_scatter(comm, sendbuf, recvbuf, recv_count, dtype, op, stream));
  }

  hal_status_t broadcast(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                         int32_t root, hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "broadcast(comm=" + hex(comm) + ", sendbuf=" + hex(sendbuf) + ", recvbuf=" + hex(recvbuf) + ", count=" +
             udec(count) + ", dtype=" + dec(dtype) + ", root=" + dec(root) + ", stream=" + hex(stream) + ")";
    };
    int32_t rank = -1, nranks = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (const Handle* c = comms_.find(comm)) rank = c->rank, nranks = c->nranks;
    }
    if (nranks > 0 && (root < 0 || root >= nranks)) return invalid(call, sig(), "root is not in [0, nranks)");
    // Only the root's sendbuf is read (as NCCL).
    std::vector<Buffer> buffers = {{recvbuf, "recvbuf", count, 0}};
    if (rank == root) buffers.push_back({sendbuf, "sendbuf", count, 0});
    if (auto bad = check_collective(comm, stream, dtype, buffers)) return invalid(call, sig(), *bad);
    return result(call, sig, real_.broadcast(comm, sendbuf, recvbuf, count, dtype, root, stream));
  }

  hal_status_t send(hal_comm_t comm, const void* sendbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                    hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "send(comm=" + hex(comm) + ", sendbuf=" + hex(sendbuf) + ", count=" + udec(count) + ", dtype=" +
             dec(dtype) + ", peer=" + dec(peer) + ", stream=" + hex(stream) + ")";
    };
    if (auto bad = check_peer(comm, peer)) return invalid(call, sig(), *bad);
    if (auto bad = check_collective(comm, stream, dtype, {{sendbuf, "sendbuf", count, 0}})) return invalid(call, sig(), *bad);
    return result(call, sig, real_.send(comm, sendbuf, count, dtype, peer, stream));
  }

  hal_status_t recv(hal_comm_t comm, void* recvbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                    hal_stream_t stream) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "recv(comm=" + hex(comm) + ", recvbuf=" + hex(recvbuf) + ", count=" + udec(count) + ", dtype=" +
             dec(dtype) + ", peer=" + dec(peer) + ", stream=" + hex(stream) + ")";
    };
    if (auto bad = check_peer(comm, peer)) return invalid(call, sig(), *bad);
    if (auto bad = check_collective(comm, stream, dtype, {{recvbuf, "recvbuf", count, 0}})) return invalid(call, sig(), *bad);
    return result(call, sig, real_.recv(comm, recvbuf, count, dtype, peer, stream));
  }

  hal_status_t op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "op_list(device=" + dec(device) + ", out_ops=" + hex(out_ops) + ", out_count=" + hex(out_count) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (out_ops == nullptr || out_count == nullptr) {
      return invalid(call, sig(), std::string(out_ops == nullptr ? "out_ops" : "out_count") + " is NULL");
    }
    const hal_status_t status = real_.op_list(device, out_ops, out_count);
    if (status == HAL_STATUS_OK) {
      if (*out_count > 0 && *out_ops == nullptr) {
        return broken(call, sig(), "returned OK with " + udec(*out_count) + " operators at NULL");
      }
      for (uint64_t i = 0; i < *out_count; ++i) {
        if ((*out_ops)[i].name == nullptr) return broken(call, sig(), "operator " + udec(i) + " has a NULL name");
      }
      std::lock_guard<std::mutex> lock(mutex_);
      op_counts_[device] = *out_count;
    }
    return result(call, sig, status);
  }

  hal_status_t op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                         const hal_tensor_t* results, uint64_t num_results) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "op_launch(stream=" + hex(stream) + ", op=" + udec(op) + ", args=" + hex(args) + ", num_args=" +
             udec(num_args) + ", results=" + hex(results) + ", num_results=" + udec(num_results) + ")";
    };
    if (num_args > 0 && args == nullptr) return invalid(call, sig(), "args is NULL with num_args > 0");
    if (num_results > 0 && results == nullptr) return invalid(call, sig(), "results is NULL with num_results > 0");
    std::unique_lock<std::mutex> lock(mutex_);
    std::optional<std::string> bad;
    const Handle* s = streams_.find(stream);
    if (s == nullptr) {
      bad = streams_.why_dead("stream", stream);
    } else if (auto it = op_counts_.find(s->device); it != op_counts_.end() && op >= it->second) {
      bad = "op " + udec(op) + " is out of range (device " + dec(s->device) + " lists " + udec(it->second) + " operators)";
    }
    for (uint64_t i = 0; !bad && i < num_args; ++i) {
      const hal_value_t& v = args[i];
      if (v.kind == HAL_VALUE_TENSOR) {
        bad = tensor(v.u.tensor, s->device, "args[" + udec(i) + "]");
      } else if (v.kind == HAL_VALUE_TENSOR_LIST) {
        if (v.u.tensors.size > 0 && v.u.tensors.data == nullptr) bad = "args[" + udec(i) + "] is a NULL tensor list";
        for (uint64_t j = 0; !bad && j < v.u.tensors.size; ++j) {
          bad = tensor(v.u.tensors.data[j], s->device, "args[" + udec(i) + "][" + udec(j) + "]");
        }
      }
    }
    for (uint64_t i = 0; !bad && i < num_results; ++i) bad = tensor(results[i], s->device, "results[" + udec(i) + "]");
    lock.unlock();
    if (bad) return invalid(call, sig(), *bad);
    return result(call, sig, real_.op_launch(stream, op, args, num_args, results, num_results));
  }

  hal_status_t program_create(int32_t device, const char* format, const void* data, uint64_t size,
                              const char* options, hal_program_t* out_program) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "program_create(device=" + dec(device) + ", format=" + (format ? "\"" + std::string(format) + "\"" : "NULL") +
             ", data=" + hex(data) + ", size_bytes=" + udec(size) + ", out_program=" + hex(out_program) + ")";
    };
    if (auto bad = check_device(device)) return invalid(call, sig(), *bad);
    if (format == nullptr) return invalid(call, sig(), "format is NULL");
    if (size > 0 && data == nullptr) return invalid(call, sig(), "data is NULL with size_bytes > 0");
    if (out_program == nullptr) return invalid(call, sig(), "out_program is NULL");
    const hal_status_t status = real_.program_create(device, format, data, size, options, out_program);
    return created(call, sig, status, programs_, *out_program, {device, call});
  }

  hal_status_t program_destroy(hal_program_t program) {
    const uint64_t call = begin();
    auto sig = [&] { return "program_destroy(program=" + hex(program) + ")"; };
    {
      std::unique_lock<std::mutex> lock(mutex_);
      for (const auto& [kernel, info] : kernels_.live()) {
        if (info.program == program) {
          const std::string why = "program still has the live kernel " + hex(kernel) + " (kernel_create at " +
                                  at_call(info.call) + "); kernel.h: its kernels must have been destroyed";
          lock.unlock();
          return invalid(call, sig(), why);
        }
      }
    }
    return destroyed(call, sig, programs_, program, "program", [&] { return real_.program_destroy(program); });
  }

  hal_status_t kernel_create(hal_program_t program, const char* name, hal_kernel_t* out_kernel) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "kernel_create(program=" + hex(program) + ", name=" + (name ? "\"" + std::string(name) + "\"" : "NULL") +
             ", out_kernel=" + hex(out_kernel) + ")";
    };
    Handle info{-1, call};
    {
      std::unique_lock<std::mutex> lock(mutex_);
      const Handle* p = programs_.find(program);
      if (p == nullptr) {
        const std::string why = programs_.why_dead("program", program);
        lock.unlock();
        return invalid(call, sig(), why);
      }
      info.device = p->device;
      info.program = program;
    }
    if (name == nullptr) return invalid(call, sig(), "name is NULL");
    if (out_kernel == nullptr) return invalid(call, sig(), "out_kernel is NULL");
    const hal_status_t status = real_.kernel_create(program, name, out_kernel);
    return created(call, sig, status, kernels_, *out_kernel, info);
  }

  hal_status_t kernel_destroy(hal_kernel_t kernel) {
    const uint64_t call = begin();
    auto sig = [&] { return "kernel_destroy(kernel=" + hex(kernel) + ")"; };
    return destroyed(call, sig, kernels_, kernel, "kernel", [&] { return real_.kernel_destroy(kernel); });
  }

  hal_status_t kernel_launch(hal_stream_t stream, hal_kernel_t kernel, const uint64_t* global, const uint64_t* local,
                             const hal_kernel_arg_t* args, uint64_t num_args) {
    const uint64_t call = begin();
    auto sig = [&] {
      return "kernel_launch(stream=" + hex(stream) + ", kernel=" + hex(kernel) + ", global=" + hex(global) +
             ", local=" + hex(local) + ", args=" + hex(args) + ", num_args=" + udec(num_args) + ")";
    };
    if (global == nullptr) return invalid(call, sig(), "global is NULL");
    if (num_args > 0 && args == nullptr) return invalid(call, sig(), "args is NULL with num_args > 0");
    std::unique_lock<std::mutex> lock(mutex_);
    std::optional<std::string> bad;
    const Handle* s = streams_.find(stream);
    const Handle* k = kernels_.find(kernel);
    if (s == nullptr) {
      bad = streams_.why_dead("stream", stream);
    } else if (k == nullptr) {
      bad = kernels_.why_dead("kernel", kernel);
    } else if (s->device != k->device) {
      bad = "stream belongs to device " + dec(s->device) + " but the kernel's program was built for device " +
            dec(k->device) + " (kernel.h)";
    }
    for (uint64_t i = 0; !bad && i < num_args; ++i) {
      const hal_kernel_arg_t& a = args[i];
      if (a.kind == HAL_KERNEL_ARG_BUFFER && a.value != nullptr) {
        bad = range(a.value, 1, s->device, "args[" + udec(i) + "] (a buffer)");
      } else if (a.kind == HAL_KERNEL_ARG_BYTES && a.size > 0 && a.value == nullptr) {
        bad = "args[" + udec(i) + "] has " + udec(a.size) + " bytes at NULL";
      }
    }
    lock.unlock();
    if (bad) return invalid(call, sig(), *bad);
    return result(call, sig, real_.kernel_launch(stream, kernel, global, local, args, num_args));
  }

 private:
  struct Buffer {
    const void* ptr;
    const char* name;
    uint64_t count;
    int scaled;  // 1: the buffer holds nranks * count elements.
  };

  uint64_t begin() {
    t_messages[slot_].clear();
    return calls_.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  // Records a violation: counted, kept when first, printed while few; aborts for HAL_VALIDATE=abort.
  std::string record(uint64_t call, const std::string& text) {
    const std::string message =
        "HAL validation: " + text + " [" + at_call(call) + " into plugin '" + plugin_ + "']";
    uint64_t n;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      n = ++violations_;
      if (n == 1) first_violation_ = message;
    }
    log_to_file(message + "\n");
    if (n <= kPrintedViolations) {
      std::fprintf(stderr, "%s\n", message.c_str());
    } else if (n == kPrintedViolations + 1) {
      std::fprintf(stderr, "HAL validation: plugin '%s': more violations; counted, not printed\n", plugin_.c_str());
    }
    if (abort_on_violation()) {
      std::fprintf(stderr, "HAL validation: aborting at the first violation (HAL_VALIDATE=abort)\n");
      std::abort();
    }
    return message;
  }

  // A call the plugin must not receive: not forwarded; fails with INVALID_ARGUMENT and the layer's message.
  hal_status_t invalid(uint64_t call, const std::string& signature, const std::string& why) {
    t_messages[slot_] = record(call, signature + ": " + why);
    return HAL_STATUS_INVALID_ARGUMENT;
  }
  // A result that contradicts the ABI: a bug in the plugin (HAL_STATUS_INTERNAL).
  hal_status_t broken(uint64_t call, const std::string& signature, const std::string& why) {
    t_messages[slot_] = record(call, signature + " " + why + " (contradicts the ABI)");
    return HAL_STATUS_INTERNAL;
  }

  // Checks the status itself: within hal_status_e, NOT_READY only where the ABI allows it.
  template <typename Sig>
  hal_status_t result(uint64_t call, const Sig& sig, hal_status_t status, bool not_ready_allowed = false) {
    if (status < HAL_STATUS_OK || status > HAL_STATUS_INTERNAL) {
      return broken(call, sig(), "returned status " + dec(status) + ", which is not a hal_status_e value");
    }
    if (status == HAL_STATUS_NOT_READY && !not_ready_allowed) {
      return broken(call, sig(), "returned HAL_STATUS_NOT_READY, which only stream_query, event_query and "
                                 "event_elapsed_time may return");
    }
    return status;
  }

  // The result of a create entry: a new, non-NULL handle, recorded in |table|.
  template <typename Sig>
  hal_status_t created(uint64_t call, const Sig& sig, hal_status_t status, Handles& table, const void* handle,
                       Handle info) {
    if (status != HAL_STATUS_OK) return result(call, sig, status);
    if (handle == nullptr) return broken(call, sig(), std::string("returned OK with a NULL ") + table.kind());
    std::unique_lock<std::mutex> lock(mutex_);
    if (const Handle* other = table.find(handle)) {
      const std::string text = "returned " + hex(handle) + ", which is already a live " + table.kind() +
                               " (created at " + at_call(other->call) + ")";
      lock.unlock();
      return broken(call, sig(), text);
    }
    table.add(handle, info);
    return status;
  }

  // A destroy entry: the handle must be live; it is forgotten before the plugin frees it.
  template <typename Sig, typename Destroy>
  hal_status_t destroyed(uint64_t call, const Sig& sig, Handles& table, const void* handle, const char* name,
                         Destroy destroy) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (table.find(handle) == nullptr) {
      const std::string why = table.why_dead(name, handle);
      lock.unlock();
      return invalid(call, sig(), why);
    }
    const Handle info = table.kill(handle, call);
    lock.unlock();
    const hal_status_t status = destroy();
    if (status != HAL_STATUS_OK) {
      lock.lock();
      table.revive(handle, info);
      lock.unlock();
    }
    return result(call, sig, status);
  }

  std::optional<std::string> check_device(int32_t device, const char* name = "device") {
    std::lock_guard<std::mutex> lock(mutex_);
    if (device < 0 || (device_count_ >= 0 && device >= device_count_)) {
      return std::string(name) + " " + dec(device) + " is out of range (the plugin has " +
             (device_count_ >= 0 ? dec(device_count_) : std::string("an unknown number of")) + " devices)";
    }
    return std::nullopt;
  }

  std::optional<std::string> check_live(Handles& table, const char* kind, const void* handle,
                                        const char* name = nullptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (table.find(handle) != nullptr) return std::nullopt;
    return table.why_dead(name ? name : kind, handle);
  }

  std::string copy_sig(const char* entry, hal_stream_t stream, const void* dst, const void* src, uint64_t size) {
    return std::string(entry) + "(stream=" + hex(stream) + ", dst=" + hex(dst) + ", src=" + hex(src) +
           ", size_bytes=" + udec(size) + ")";
  }

  // A copy or memset on |stream|: device pointers must lie in live allocations of the stream's device;
  // host pointers must not be NULL (for a non-empty copy).
  std::optional<std::string> check_copy(hal_stream_t stream, const void* dst, const char* dst_name, bool dst_device,
                                        const void* src, const char* src_name, bool src_device, uint64_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Handle* s = streams_.find(stream);
    if (s == nullptr) return streams_.why_dead("stream", stream);
    const std::pair<const void*, std::pair<const char*, bool>> ends[] = {{dst, {dst_name, dst_device}},
                                                                         {src, {src_name, src_device}}};
    for (const auto& [ptr, what] : ends) {
      if (what.first == nullptr) continue;
      std::optional<std::string> bad;
      if (what.second) {
        bad = range(ptr, size, s->device, what.first);
      } else if (size > 0 && ptr == nullptr) {
        bad = std::string(what.first) + " (host memory) is NULL";
      }
      if (bad) return bad;
    }
    return std::nullopt;
  }

  // Why [ptr, ptr + size) is not inside one live allocation of |device|; nullopt when it is. Lock held.
  std::optional<std::string> range(const void* ptr, uint64_t size, int32_t device, const std::string& name) const {
    if (size == 0) return std::nullopt;  // stream.h: a size of 0 is a no-op (that still orders).
    const uintptr_t p = addr(ptr);
    // Formatted only for a violation: this runs on every copy.
    const auto what = [&] { return name + " " + hex(ptr) + " (" + udec(size) + " bytes)"; };
    if (p == 0) return name + " is NULL";
    if (size > UINTPTR_MAX - p) return what() + ": the extent overflows the address space";
    auto live = memory_.containing(p);
    if (memory_.is_live(live)) {
      const Allocation& a = live->second;
      const uint64_t end = p - live->first + size;
      if (a.device == device && end <= a.size) return std::nullopt;
      const std::string of = " the allocation at " + hex(reinterpret_cast<void*>(live->first)) + " (" + udec(a.size) +
                             " bytes on device " + dec(a.device) + ", memory_allocate at " + at_call(a.call) + ")";
      if (a.device != device) return what() + " lies in" + of + ", not in memory of device " + dec(device);
      return what() + " runs " + udec(end - a.size) + " bytes past the end of" + of + ": out of bounds";
    }
    auto freed = memory_.freed_containing(p);
    if (memory_.is_freed(freed)) {
      const FreedAllocation& f = freed->second;
      return what() + " lies in memory freed by memory_free at " + at_call(f.free_call) + " (the allocation at " +
             hex(reinterpret_cast<void*>(freed->first)) + " of " + udec(f.allocation.size) +
             " bytes, memory_allocate at " + at_call(f.allocation.call) + "): a use after free";
    }
    return what() + " is not in any live allocation of device " + dec(device) +
           " (no memory_allocate of this plugin returned memory there)";
  }

  // Why memory_free(device, p) is wrong. Lock held.
  std::string why_not_freeable(int32_t device, uintptr_t p) const {
    auto live = memory_.containing(p);
    if (memory_.is_live(live)) {
      const Allocation& a = live->second;
      if (live->first != p) {
        return "ptr lies " + udec(p - live->first) + " bytes inside the allocation at " +
               hex(reinterpret_cast<void*>(live->first)) + " (memory_allocate at " + at_call(a.call) +
               "), not at its start";
      }
      return "ptr is an allocation of device " + dec(a.device) + " (memory_allocate at " + at_call(a.call) +
             "), not of device " + dec(device);
    }
    auto freed = memory_.freed_containing(p);
    if (memory_.is_freed(freed)) {
      const FreedAllocation& f = freed->second;
      if (freed->first == p) {
        return "ptr was already freed by memory_free at " + at_call(f.free_call) + " (double free; " +
               udec(f.allocation.size) + " bytes allocated by memory_allocate at " + at_call(f.allocation.call) + ")";
      }
      return "ptr lies in memory freed by memory_free at " + at_call(f.free_call) + ": a use after free";
    }
    return "ptr was never returned by memory_allocate of this plugin";
  }

  std::optional<std::string> tensor(const hal_tensor_t& t, int32_t device, const std::string& name) const {
    if (t.data == nullptr || t.ndim < 0) return std::nullopt;  // Absent, or no elements (kernel.h).
    if (t.ndim > 0 && (t.sizes == nullptr || t.strides == nullptr)) return name + " has NULL sizes or strides";
    if (t.offset < 0) return name + " has a negative offset " + dec(t.offset);
    uint64_t last = static_cast<uint64_t>(t.offset);
    for (int32_t d = 0; d < t.ndim; ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) return name + " has a negative size or stride in dimension " + dec(d);
      if (t.sizes[d] == 0) return std::nullopt;  // No elements: nothing is touched.
      auto step = mul(static_cast<uint64_t>(t.sizes[d] - 1), static_cast<uint64_t>(t.strides[d]));
      if (!step || __builtin_add_overflow(last, *step, &last)) return name + "'s extent overflows";
    }
    const uint64_t element = dtype_size(t.dtype);
    if (element == 0) return std::nullopt;
    auto start = mul(static_cast<uint64_t>(t.offset), element);
    auto end = mul(last + 1, element);
    if (!start || !end || *start > UINTPTR_MAX - addr(t.data)) return name + "'s extent overflows";
    return range(static_cast<const char*>(t.data) + *start, *end - *start, device, name + " (a tensor)");
  }

  std::optional<std::string> check_peer(hal_comm_t comm, int32_t peer) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Handle* c = comms_.find(comm);
    if (c != nullptr && (peer < 0 || peer >= c->nranks)) return "peer " + dec(peer) + " is not in [0, nranks)";
    if (c != nullptr && peer == c->rank) return "peer " + dec(peer) + " is this rank itself";
    return std::nullopt;
  }

  std::optional<std::string> check_collective(hal_comm_t comm, hal_stream_t stream, hal_dtype_t dtype,
                                              const std::vector<Buffer>& buffers) {
    std::lock_guard<std::mutex> lock(mutex_);
    const Handle* c = comms_.find(comm);
    if (c == nullptr) return comms_.why_dead("comm", comm);
    const Handle* s = streams_.find(stream);
    if (s == nullptr) return streams_.why_dead("stream", stream);
    if (s->device != c->device) {
      return "stream belongs to device " + dec(s->device) + ", the communicator to device " + dec(c->device) +
             " (collective.h: collectives are queued on a stream of the communicator's device)";
    }
    const uint64_t element = dtype_size(dtype);
    if (element == 0) return std::nullopt;
    for (const Buffer& b : buffers) {
      auto count = b.scaled ? mul(b.count, static_cast<uint64_t>(c->nranks)) : std::optional<uint64_t>(b.count);
      auto bytes = count ? mul(*count, element) : std::nullopt;
      if (!bytes) return std::string(b.name) + ": count * element size overflows";
      if (auto bad = range(b.ptr, *bytes, c->device, b.name)) return bad;
    }
    return std::nullopt;
  }

  const int slot_;
  const hal_plugin_api_t real_;
  const std::string plugin_;
  std::atomic<uint64_t> calls_{0};
  std::mutex mutex_;  // Guards everything below.
  int32_t device_count_ = -1;
  Allocations memory_, host_;
  std::map<std::pair<const void*, uint64_t>, Mapping> mappings_;  // (host_ptr, size) -> mapping.
  Handles streams_{"stream", "stream_destroy"}, events_{"event", "event_destroy"}, comms_{"comm", "comm_destroy"},
      programs_{"program", "program_destroy"}, kernels_{"kernel", "kernel_destroy"};
  std::unordered_map<int32_t, uint64_t> op_counts_;  // device -> op_list count.
  uint64_t violations_ = 0;
  std::string first_violation_;
};

Report Validator::report(const Held& held) {
  Report r;
  r.plugin = plugin_;
  r.calls = calls_.load();
  std::lock_guard<std::mutex> lock(mutex_);
  r.violations = violations_;
  r.first_violation = first_violation_;
  std::vector<const void*> segments = held.segments;
  std::sort(segments.begin(), segments.end());
  uint64_t held_count = 0, held_bytes = 0, unknown_count = 0, unknown_bytes = 0;
  for (const auto& [p, a] : memory_.live()) {
    const void* ptr = reinterpret_cast<const void*>(p);
    if (std::binary_search(segments.begin(), segments.end(), ptr)) {
      ++held_count, held_bytes += a.size;
    } else if (std::find(held.uninspected_devices.begin(), held.uninspected_devices.end(), a.device) !=
               held.uninspected_devices.end()) {
      ++unknown_count, unknown_bytes += a.size;
    } else {
      r.leaks.push_back("memory_allocate(device=" + dec(a.device) + ", size_bytes=" + udec(a.size) + ") -> " + hex(ptr) +
                        " at " + at_call(a.call) + ", never freed");
      r.leaked_bytes += a.size;
    }
  }
  auto count = [&](uint64_t n, const char* what, uint64_t bytes, const char* note) {
    if (n == 0) return;
    std::string line = udec(n) + " " + what + (n == 1 ? "" : "s");
    if (bytes > 0) line += " (" + format_bytes(bytes) + ")";
    r.live.push_back(line + note);
  };
  count(held_count, "segment", held_bytes, " held by the caching allocator");
  count(unknown_count, "allocation", unknown_bytes, " of a busy caching allocator (not inspected)");
  uint64_t host_bytes = 0;
  for (const auto& [p, a] : host_.live()) host_bytes += a.size;
  count(host_.live().size(), "pinned host allocation", host_bytes, "");
  count(mappings_.size(), "mapping", 0, "");
  count(streams_.live().size(), "stream", 0, "");
  count(events_.live().size(), "event", 0, "");
  count(comms_.live().size(), "communicator", 0, "");
  count(programs_.live().size(), "program", 0, "");
  count(kernels_.live().size(), "kernel", 0, "");
  return r;
}

// --- Slots and their trampolines ---------------------------------------------------------------------------

std::array<std::atomic<Validator*>, kSlots> g_slots{};
std::mutex g_slots_mutex;

// The C entry of slot |Slot| for member |Method|: forwards to the slot's Validator.
template <int Slot, auto Method>
struct Thunk;
template <int Slot, typename R, typename... A, R (Validator::*Method)(A...)>
struct Thunk<Slot, Method> {
  static R call(A... args) { return (g_slots[Slot].load(std::memory_order_acquire)->*Method)(args...); }
};

#define HAL_VALIDATED_ENTRIES(X)                                                                               \
  X(initialize) X(shutdown) X(get_last_error) X(device_count) X(device_get_properties) X(device_get_memory_info) \
  X(memory_allocate) X(memory_free) X(stream_create) X(stream_destroy) X(stream_synchronize) X(stream_query)     \
  X(stream_wait_event) X(event_create) X(event_destroy) X(event_record) X(event_synchronize) X(event_query)      \
  X(event_elapsed_time) X(memcpy_h2d_async) X(memcpy_d2h_async) X(memcpy_d2d_async) X(host_allocate)            \
  X(host_free) X(memcpy_peer_async) X(memset_async) X(launch_host_func) X(memory_map) X(memory_unmap)           \
  X(comm_get_unique_id) X(comm_init_rank) X(comm_destroy) X(comm_abort) X(allreduce) X(allgather)              \
  X(reduce_scatter) X(broadcast) X(send) X(recv) X(op_list) X(op_launch) X(program_create) X(program_destroy)  \
  X(kernel_create) X(kernel_destroy) X(kernel_launch)

// Replaces every non-NULL entry of |table| with slot |Slot|'s trampoline (NULL stays NULL: "not supported").
template <int Slot>
void interpose(hal_plugin_api_t& table) {
#define HAL_INTERPOSE(entry) \
  if (table.entry != nullptr) table.entry = &Thunk<Slot, &Validator::entry>::call;
  HAL_VALIDATED_ENTRIES(HAL_INTERPOSE)
#undef HAL_INTERPOSE
}

using InterposeFn = void (*)(hal_plugin_api_t&);
template <size_t... I>
constexpr std::array<InterposeFn, kSlots> interposers(std::index_sequence<I...>) {
  return {&interpose<static_cast<int>(I)>...};
}
constexpr std::array<InterposeFn, kSlots> kInterposers = interposers(std::make_index_sequence<kSlots>{});

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* value = std::getenv("HAL_VALIDATE");
    return value != nullptr && *value != '\0' && std::strcmp(value, "0") != 0;
  }();
  return on;
}

int wrap(const hal_plugin_api_t& real, const std::string& plugin, hal_plugin_api_t* out) {
  *out = real;
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (int slot = 0; slot < kSlots; ++slot) {
    if (g_slots[slot].load() != nullptr) continue;
    // Leaked on release: a thread may still be returning through a trampoline of this slot.
    g_slots[slot].store(new Validator(slot, real, plugin), std::memory_order_release);
    kInterposers[slot](*out);
    return slot;
  }
  std::fprintf(stderr, "HAL validation: no free slot (%d plugins are validated): plugin '%s' runs unvalidated\n",
               kSlots, plugin.c_str());
  return -1;
}

void print(const Report& report) {
  const std::string text = format(report);
  std::fputs(text.c_str(), stderr);
  log_to_file(text);
}

void release(int slot) noexcept {
  if (slot < 0 || slot >= kSlots) return;
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  g_slots[slot].store(nullptr);
}

Report report(int slot, const Held& held) {
  Validator* v = slot >= 0 && slot < kSlots ? g_slots[slot].load(std::memory_order_acquire) : nullptr;
  if (v == nullptr) return {};
  return v->report(held);
}

std::string format(const Report& r) {
  std::string text = "HAL validation: plugin '" + r.plugin + "': " + udec(r.calls) + " calls checked, " +
                     (r.violations == 0 ? std::string("no violations")
                                         : udec(r.violations) + " violation" + (r.violations == 1 ? "" : "s")) + ", " +
                     (r.leaks.empty() ? std::string("no leaks")
                                      : udec(r.leaks.size()) + " leaked allocation" + (r.leaks.size() == 1 ? "" : "s") +
                                            " (" + format_bytes(r.leaked_bytes) + ")");
  if (!r.live.empty()) {
    text += "; still live (held by the runtime or by objects alive now, not leaks): ";
    for (size_t i = 0; i < r.live.size(); ++i) text += (i ? ", " : "") + r.live[i];
  }
  text += "\n";
  for (const std::string& leak : r.leaks) text += "HAL validation:   leaked: " + leak + "\n";
  if (r.violations > 0) {
    const std::string prefix = "HAL validation: ";
    const bool prefixed = r.first_violation.compare(0, prefix.size(), prefix) == 0;
    text += prefix + "  first violation: " + r.first_violation.substr(prefixed ? prefix.size() : 0) + "\n";
  }
  return text;
}

}  // namespace hal::validation
