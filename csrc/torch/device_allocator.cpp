// The device allocator of the `hal` backend (device_allocator.h).
#include "device_allocator.h"

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <utility>

#include "runtime/allocator.h"
#include "runtime_access.h"
#include "streams.h"

namespace hal::bridge {
namespace {

void free_on_device(int index, void* ptr) noexcept {
  if (in_bad_fork()) return;  // The child must not touch the parent's device state.
  Runtime* rt = Runtime::instance();
  if (rt == nullptr || index >= rt->device_count()) return;  // After shutdown memory is already released.
  try {
    rt->devices()[index]->allocator().free(ptr);
  } catch (...) {
  }
}

// One deleter per device index, so a DataPtr needs no heap context: its context is the allocation itself.
template <size_t... I>
constexpr std::array<c10::DeleterFnPtr, sizeof...(I)> make_deleters(std::index_sequence<I...>) {
  return {{+[](void* p) { free_on_device(static_cast<int>(I), p); }...}};
}
constexpr auto kDeleters = make_deleters(std::make_index_sequence<kMaxDevices>{});

bool allocated_here(const c10::DataPtr& data) {
  return data.get() != nullptr && std::find(kDeleters.begin(), kDeleters.end(), data.get_deleter()) != kDeleters.end();
}

// HAL's allocator statistics in torch.cuda's layout (the "all" aggregate; HAL keeps no per-pool split, so the
// small_pool / large_pool entries stay 0). The runtime counts rounded block sizes, so requested_bytes equals
// allocated_bytes; active_bytes counts live blocks only (blocks freed but still waiting on another stream's
// events are not counted). Counts (allocation, segment) keep no peak of their own: their peak is the current
// value. Byte totals (".allocated" / ".freed" of the byte stats) are not kept and stay 0.
c10::CachingDeviceAllocator::DeviceStats to_torch_stats(const AllocatorStats& s) {
  using c10::CachingAllocator::Stat;
  using c10::CachingAllocator::StatArray;
  using c10::CachingAllocator::StatType;
  c10::CachingDeviceAllocator::DeviceStats out;
  auto set = [](StatArray& a, int64_t current, int64_t peak, int64_t allocated, int64_t freed) {
    Stat& all = a[static_cast<size_t>(StatType::AGGREGATE)];
    all.current = current;
    all.peak = std::max(peak, current);
    all.allocated = allocated;
    all.freed = freed;
  };
  set(out.allocated_bytes, s.allocated_bytes, s.allocated_bytes_peak, 0, 0);
  set(out.active_bytes, s.allocated_bytes, s.allocated_bytes_peak, 0, 0);
  set(out.requested_bytes, s.allocated_bytes, s.allocated_bytes_peak, 0, 0);
  set(out.reserved_bytes, s.reserved_bytes, s.reserved_bytes_peak, 0, 0);
  set(out.allocation, s.allocated_blocks, 0, s.num_allocs, s.num_frees);
  set(out.segment, s.segments, 0, s.num_raw_allocs, s.num_raw_frees);
  set(out.active, s.active_blocks, 0, s.num_allocs, s.num_frees);
  out.num_alloc_retries = s.num_alloc_retries;
  out.num_ooms = s.num_ooms;
  out.num_device_alloc = s.num_raw_allocs;
  out.num_device_free = s.num_raw_frees;
  return out;
}

struct DeviceAllocatorImpl final : public c10::DeviceAllocator {
  c10::DataPtr allocate(size_t nbytes) override { return allocate_on(current_device(), nbytes); }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    Stream stream = current_stream(current_device());
    translate("copying device memory", [&] {
      stream.copy_d2d(dest, src, count);
      stream.synchronize();
    });
  }

  bool initialized() override { return Runtime::instance() != nullptr; }
  void emptyCache(c10::MempoolId_t) override {
    Runtime* rt = Runtime::instance();
    if (rt == nullptr || in_bad_fork()) return;
    translate("empty_cache", [&] {
      for (Device* d : rt->devices()) d->allocator().empty_cache();
    });
  }
  void recordStream(const c10::DataPtr& ptr, c10::Stream stream) override { record_stream(ptr, stream); }
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex index) override {
    return to_torch_stats(device(index).allocator().stats());
  }
  void resetAccumulatedStats(c10::DeviceIndex index) override { device(index).allocator().reset_accumulated_stats(); }
  void resetPeakStats(c10::DeviceIndex index) override { device(index).allocator().reset_peak_stats(); }
  std::pair<size_t, size_t> getMemoryInfo(c10::DeviceIndex index) override {
    auto info = translate("memory info", [&] { return device(index).memory_info(); });
    return {static_cast<size_t>(info.first), static_cast<size_t>(info.second)};
  }
};

DeviceAllocatorImpl g_device_allocator;

// aten::record_stream (only CUDA has a kernel of its own).
void record_stream_kernel(at::Tensor& self, c10::Stream stream) { record_stream(self.storage().data_ptr(), stream); }

}  // namespace

c10::DeviceAllocator* device_allocator() { return &g_device_allocator; }

c10::DataPtr allocate_on(c10::DeviceIndex index, size_t nbytes) {
  Device& dev = device(index);
  index = static_cast<c10::DeviceIndex>(dev.index());
  void* ptr = translate("allocating device memory",
                        [&] { return dev.allocator().allocate(nbytes, dev.current_stream()); });
  return {ptr, ptr, kDeleters[index], c10::Device(kHal, index)};
}

void record_stream(const c10::DataPtr& data, const c10::Stream& stream) {
  if (!allocated_here(data)) return;
  Stream s = from_c10(stream);
  translate("record_stream", [&] { s.device().allocator().record_stream(data.get_context(), s); });
}

c10::Device device_of_ptr(const void* ptr) {
  device(-1);  // Starts the runtime (or throws why it cannot).
  const Runtime& rt = *Runtime::instance();
  for (Device* d : rt.devices()) {  // Exact starts first (O(1) each), then interior pointers.
    if (d->index() < kMaxDevices && d->allocator().allocation_size(const_cast<void*>(ptr)) > 0) {
      return c10::Device(kHal, static_cast<c10::DeviceIndex>(d->index()));
    }
  }
  for (Device* d : rt.devices()) {
    if (d->index() < kMaxDevices && d->allocator().find_allocation(ptr).first != nullptr) {
      return c10::Device(kHal, static_cast<c10::DeviceIndex>(d->index()));
    }
  }
  TORCH_CHECK(false, "hal: ", ptr, " is not inside a live allocation of any HAL device");
}

void resize_storage_bytes(c10::StorageImpl* storage, size_t nbytes) {
  TORCH_CHECK(storage->resizable(), "hal: trying to resize storage that is not resizable");
  const c10::DeviceIndex index = storage->device().index();
  c10::DataPtr fresh = allocate_on(index, nbytes);
  const size_t keep = std::min(nbytes, storage->nbytes());
  if (keep > 0 && storage->data() != nullptr) {
    Stream stream = current_stream(index);
    translate("resizing storage", [&] { stream.copy_d2d(fresh.get(), storage->data(), keep); });
    // The old block may belong to another stream: it must not be reused before this copy read it.
    record_stream(storage->data_ptr(), to_c10(stream));
  }
  storage->set_data_ptr_noswap(std::move(fresh));  // The old block is freed in stream order.
  storage->set_nbytes(nbytes);
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) { m.impl("record_stream", TORCH_FN(record_stream_kernel)); }

}  // namespace hal::bridge
