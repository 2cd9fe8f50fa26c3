// Host access to the memory of host-reachable devices (host_reachable(): host-addressable, or mappable): a
// mapping of device memory, and CPU tensors that alias hal tensors, so that torch's CPU kernels can run on
// device memory in place (the copies and the fallback use them).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Allocator.h>

#include <cstddef>
#include <vector>

#include "runtime/device.h"

namespace hal::bridge {

// Host addresses of |nbytes| of device memory at |device_ptr|: the pointer itself on host-addressable devices,
// Device::map on mappable ones (unmapped on destruction). Throws c10::Error for an unreachable device.
class HostMapping {
 public:
  HostMapping(Device& dev, void* device_ptr, size_t nbytes);
  ~HostMapping();
  HostMapping(HostMapping&& other) noexcept;
  HostMapping& operator=(HostMapping&&) = delete;
  HostMapping(const HostMapping&) = delete;
  void* host() const { return host_; }

 private:
  Device* dev_ = nullptr;
  void* host_ = nullptr;
  size_t nbytes_ = 0;
  bool mapped_ = false;
};

// CPU tensors aliasing hal tensors; their mappings are released together when this goes. The caller has
// synchronized the streams that write the memory.
class HostAliases {
 public:
  // A CPU tensor over the memory of hal tensor |t| (its whole storage) with |t|'s dtype, geometry and
  // conjugate / negative bits. With |grow|, a CPU kernel may resize it: the new memory comes from |grow|.
  at::Tensor alias(const at::Tensor& t, c10::Allocator* grow = nullptr);

 private:
  std::vector<HostMapping> mappings_;
};

// A tensor dispatched as |key| over |storage| with |t|'s dtype, geometry and conjugate / negative bits (the bits
// travel with it: kernels that handle them, such as copy_ and mm, then see the same values).
at::Tensor tensor_like(const at::Tensor& t, c10::Storage storage, c10::DispatchKey key);
// A meta tensor with |t|'s dtype, geometry and math bits over a storage of |t|'s storage size: what Meta kernels
// take in place of a hal tensor to compute the geometry of results.
at::Tensor meta_like(const at::Tensor& t);

}  // namespace hal::bridge
