// The host (pinned) allocator of the `hal` backend (host_allocator.h).
#include "host_allocator.h"

#include <ATen/core/CachingHostAllocator.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "runtime_access.h"

namespace hal::bridge {
namespace {

std::mutex g_pinned_mutex;
std::map<uintptr_t, size_t> g_pinned;  // base -> size, for is_pinned.

struct PinnedContext {
  Plugin* plugin;  // nullptr: plain memory from std::aligned_alloc.
  void* ptr;
};

void free_pinned(void* ctx) {
  auto* c = static_cast<PinnedContext*>(ctx);
  {
    std::lock_guard<std::mutex> lock(g_pinned_mutex);
    g_pinned.erase(reinterpret_cast<uintptr_t>(c->ptr));
  }
  if (c->plugin == nullptr) {
    std::free(c->ptr);
  } else if (!in_bad_fork()) {
    try {
      c->plugin->api().host_free(c->ptr);
    } catch (...) {  // The plugin was shut down: its memory went with it.
    }
  }
  delete c;
}

void free_nothing(void*) {}

// Also torch's at::HostAllocator for PrivateUse1 (torch.accelerator.empty_host_cache() and host statistics
// ask it). Nothing is cached: a block goes back to the plugin when its storage dies, and queued copies keep
// their host buffers alive themselves (copies.cpp), so there are no events to record and no cache to empty.
struct PinnedAllocator final : public at::HostAllocator {
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes == 0) return {nullptr, nullptr, &free_nothing, c10::Device(c10::kCPU)};
    Plugin* plugin = nullptr;
    if (device_count() > 0) {
      Device& dev = device(current_device());
      if (dev.supports("host_allocate") && dev.supports("host_free")) plugin = &dev.plugin();
    }
    void* ptr = nullptr;
    if (plugin != nullptr) {
      translate("allocating pinned memory", [&] {
        plugin->check(plugin->api().host_allocate(nbytes, &ptr), "host_allocate");
      });
    } else {
      ptr = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
      TORCH_CHECK_WITH(OutOfMemoryError, ptr != nullptr, "hal: out of host memory allocating ", nbytes,
                       " pinned bytes");
    }
    {
      std::lock_guard<std::mutex> lock(g_pinned_mutex);
      g_pinned[reinterpret_cast<uintptr_t>(ptr)] = nbytes;
    }
    return {ptr, new PinnedContext{plugin, ptr}, &free_pinned, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

  bool record_event(void*, void*, c10::Stream) override { return true; }
  void empty_cache() override {}
  at::HostStats get_stats() override { return {}; }
  void reset_accumulated_stats() override {}
  void reset_peak_stats() override {}
};

PinnedAllocator g_pinned_allocator;
REGISTER_HOST_ALLOCATOR(at::kPrivateUse1, &g_pinned_allocator)

}  // namespace

c10::Allocator* pinned_allocator() { return &g_pinned_allocator; }

bool is_pinned(const void* ptr) {
  auto p = reinterpret_cast<uintptr_t>(ptr);
  std::lock_guard<std::mutex> lock(g_pinned_mutex);
  auto it = g_pinned.upper_bound(p);
  if (it == g_pinned.begin()) return false;
  --it;
  return p < it->first + it->second;
}

}  // namespace hal::bridge
