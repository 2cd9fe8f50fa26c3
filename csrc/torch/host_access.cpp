// Host access to device memory (host_access.h).
#include "host_access.h"

#include <utility>

#include "runtime_access.h"

namespace hal::bridge {

HostMapping::HostMapping(Device& dev, void* device_ptr, size_t nbytes) : dev_(&dev), nbytes_(nbytes) {
  if (dev.properties().host_addressable || device_ptr == nullptr || nbytes == 0) {
    host_ = device_ptr;
    return;
  }
  TORCH_CHECK(host_reachable(dev), "hal: the memory of ", dev.name(), " cannot be mapped to the host");
  host_ = translate("mapping device memory", [&] { return dev.map(device_ptr, nbytes); });
  mapped_ = true;
}

HostMapping::HostMapping(HostMapping&& other) noexcept
    : dev_(other.dev_), host_(other.host_), nbytes_(other.nbytes_), mapped_(other.mapped_) {
  other.mapped_ = false;
}

HostMapping::~HostMapping() {
  if (!mapped_) return;
  try {
    dev_->unmap(host_, nbytes_);
  } catch (...) {  // After shutdown the mapping went with the plugin.
  }
}

at::Tensor tensor_like(const at::Tensor& t, c10::Storage storage, c10::DispatchKey key) {
  at::Tensor out = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(key), t.dtype());
  out.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  out._set_conj(t.is_conj());
  out._set_neg(t.is_neg());
  return out;
}

at::Tensor HostAliases::alias(const at::Tensor& t, c10::Allocator* grow) {
  c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
  mappings_.emplace_back(device(t.device().index()), storage->mutable_data(), storage->nbytes());
  c10::Storage host(c10::Storage::use_byte_size_t(), storage->nbytes(),
                    c10::DataPtr(mappings_.back().host(), c10::Device(c10::kCPU)), grow, grow != nullptr);
  return tensor_like(t, std::move(host), c10::DispatchKey::CPU);
}

at::Tensor meta_like(const at::Tensor& t) {
  // Resizable, as the hal tensor is: a Meta kernel resizes an out= argument it finds too small.
  c10::Storage storage(c10::Storage::use_byte_size_t(), t.storage().nbytes(), c10::GetAllocator(c10::kMeta), true);
  return tensor_like(t, std::move(storage), c10::DispatchKey::Meta);
}

}  // namespace hal::bridge
