// The torch bridge: every HAL device is torch device `hal:N` (PrivateUse1 renamed to "hal").
//
// Layers (each looks only down):
//   backend.cpp  runtime access, fork safety, device guard, device/pinned allocators, generators, hooks;
//   kernels.cpp  the native aten kernels (factories, copies, views) and the boxed fallback;
//   module.cpp   the Python module hal._torch_C (bindings only, no logic).
//
// Index mapping: torch index N is HAL global device index N (hal.devices()[N]); a tensor's data pointer is
// the plugin's device pointer, never a host alias.
//
// Runtime: the bridge shares the process-wide hal::Runtime with hal._C. When torch touches a device before
// anything initialized the runtime, the bridge initializes it with the default options Python registered
// (set_default_runtime_options: the package's plugin folder, environment honoured).
//
// Errors: every hal::Error is turned into a c10::Error (TORCH_CHECK) with the runtime's message, so Python
// sees RuntimeError naming plugin, device and call.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Allocator.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "allocator.h"
#include "device.h"
#include "registry.h"
#include "stream.h"

namespace hal::bridge {

// --- Runtime access (backend.cpp) ---------------------------------------------------------------------

// Options used when the bridge must initialize the runtime itself.
void set_default_runtime_options(const RuntimeOptions& options);
// Devices visible to torch; initializes the runtime on first use. Never throws: 0 on any error.
int device_count() noexcept;
// The device behind torch index |index| (-1: the current device). Throws c10::Error for a bad index, in a
// forked child, or when the runtime cannot start.
Device& device(c10::DeviceIndex index);
// Throws c10::Error when this process is a child forked after the bridge initialized the runtime.
void check_not_forked();
bool in_bad_fork() noexcept;
// Whether the host can read and write the device's memory (host-addressable, or mappable).
bool host_reachable(const Device& dev);

// Runs |fn| and rethrows any hal::Error / std::exception as c10::Error with |what| prefixed.
template <typename Fn>
auto translate(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "hal: ", what, ": ", e.what());
  }
}

// --- Current device and streams (backend.cpp) -----------------------------------------------------------

c10::DeviceIndex current_device();
void set_current_device(c10::DeviceIndex index);
// The calling thread's current stream on |index| (-1: the current device); the default stream unless set.
// This per-thread current stream is THE current stream of HAL in a process with torch: torch.hal,
// torch.accelerator and the hal Python API (hal.current_stream / hal.stream) all read and set it.
Stream current_stream(c10::DeviceIndex index);
// The default stream (id 0) of |index|.
Stream default_stream(c10::DeviceIndex index);
// Makes |stream| the calling thread's current stream on its device; returns the previous one.
Stream exchange_stream(const Stream& stream);
// The stream with |id| (Stream::id(), what torch stores as a StreamId) on |index|; throws for an unknown id.
Stream stream_of(c10::DeviceIndex index, int64_t id);
c10::Stream to_c10(const Stream& stream);
Stream from_c10(const c10::Stream& stream);

// --- Memory (backend.cpp) -------------------------------------------------------------------------------

// The c10::DeviceAllocator registered for PrivateUse1 (allocates on the current device).
c10::DeviceAllocator* device_allocator();
// |nbytes| of device memory on |index| (-1: the current device) for its current stream, from HAL's caching
// allocator, as a DataPtr that frees it. This is the allocation hot path: no lock but the allocator's.
c10::DataPtr allocate_on(c10::DeviceIndex index, size_t nbytes);
// The hal device whose live allocation contains |ptr| (its start or an interior address). Throws otherwise.
c10::Device device_of_ptr(const void* ptr);
// Pinned host memory (the current device's plugin host_allocate when it has one, else plain memory).
c10::Allocator* pinned_allocator();
bool is_pinned(const void* ptr);
// Grows |storage| (a hal storage) to |nbytes|, keeping its contents.
void resize_storage_bytes(c10::StorageImpl* storage, size_t nbytes);

// A host address range aliasing device memory, for host-reachable devices: the pointer itself for
// host-addressable devices, a memory_map for mappable ones (unmapped on destruction).
class HostView {
 public:
  HostView() = default;
  HostView(Device& dev, void* device_ptr, size_t nbytes);
  ~HostView();
  HostView(HostView&& other) noexcept;
  HostView& operator=(HostView&&) = delete;
  HostView(const HostView&) = delete;
  void* host() const { return host_; }

 private:
  Device* dev_ = nullptr;
  void* host_ = nullptr;
  size_t nbytes_ = 0;
  bool mapped_ = false;
};

// --- Generators (backend.cpp) ---------------------------------------------------------------------------

const at::Generator& default_generator(c10::DeviceIndex index);
at::Generator new_generator(c10::DeviceIndex index);
// The CPU generator that carries a hal generator's state: CPU kernels run by the fallback draw from it.
at::Generator cpu_generator_of(const at::Generator& hal_generator);

// --- Registration (backend.cpp) ---------------------------------------------------------------------------

// Registers hooks and allocators. Idempotent; called when the module loads.
void register_backend();

// --- Fallback (kernels.cpp) -------------------------------------------------------------------------------

// The boxed fallback registered for every op without a native kernel (see kernels.cpp). Native kernels for
// one plugin's devices call it for the other plugins' tensors.
void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack);

std::map<std::string, int64_t> fallback_stats();
void reset_fallback_stats();
// Names are "aten::add.Tensor" (one overload) or "aten::add" / "add" (every overload).
void set_fallback_blocklist(const std::vector<std::string>& names);
std::vector<std::string> fallback_blocklist();

}  // namespace hal::bridge
