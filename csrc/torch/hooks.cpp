// The PrivateUse1 hooks of the `hal` backend (hooks.h).
#include "hooks.h"

#include <ATen/detail/PrivateUse1HooksInterface.h>

#include <mutex>

#include "device_allocator.h"
#include "generator.h"
#include "host_allocator.h"
#include "runtime_access.h"

namespace hal::bridge {
namespace {

struct Hooks final : public at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return device_count() > 0; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return Runtime::instance() != nullptr; }
  void init() const override { device_count(); }
  c10::DeviceIndex deviceCount() const override { return static_cast<c10::DeviceIndex>(device_count()); }
  void setCurrentDevice(c10::DeviceIndex index) const override { set_current_device(index); }
  c10::DeviceIndex getCurrentDevice() const override { return current_device(); }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex index) const override { return exchange_device(index); }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex index) const override {
    if (index >= device_count()) return current_device();
    return exchange_device(index);
  }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex index) const override {
    return default_generator(index);
  }
  at::Generator getNewGenerator(c10::DeviceIndex index) const override { return new_generator(index); }
  at::Device getDeviceFromPtr(void* data) const override { return device_of_ptr(data); }
  bool isPinnedPtr(const void* data) const override { return is_pinned(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return pinned_allocator(); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t nbytes) const override {
    resize_storage_bytes(storage.unsafeGetStorageImpl(), nbytes);
  }
};

}  // namespace

void register_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::RegisterPrivateUse1HooksInterface(new Hooks());  // Leaked on purpose: torch keeps the pointer.
    c10::SetAllocator(kHal, device_allocator());
  });
}

}  // namespace hal::bridge
