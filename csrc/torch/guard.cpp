// The device guard of the `hal` backend (guard.h).
#include "guard.h"

#include "device_allocator.h"
#include "runtime_access.h"
#include "streams.h"

namespace hal::bridge {

c10::DeviceType GuardImpl::type() const { return kHal; }

c10::Device GuardImpl::exchangeDevice(c10::Device d) const {
  TORCH_CHECK(d.type() == kHal, "hal: expected a hal device, got ", d);
  return c10::Device(kHal, exchange_device(d.index()));
}

c10::Device GuardImpl::getDevice() const { return c10::Device(kHal, current_device()); }

void GuardImpl::setDevice(c10::Device d) const {
  TORCH_CHECK(d.type() == kHal, "hal: expected a hal device, got ", d);
  if (d.index() >= 0) set_current_device(d.index());
}

void GuardImpl::uncheckedSetDevice(c10::Device d) const noexcept { unchecked_set_current_device(d.index()); }

c10::DeviceIndex GuardImpl::deviceCount() const noexcept { return static_cast<c10::DeviceIndex>(device_count()); }

c10::Stream GuardImpl::getStream(c10::Device d) const { return to_c10(current_stream(d.index())); }

c10::Stream GuardImpl::getDefaultStream(c10::Device d) const { return to_c10(default_stream(d.index())); }

c10::Stream GuardImpl::getStreamFromGlobalPool(c10::Device d, bool /*is_high_priority*/) const {
  return to_c10(pooled_stream(d.index()));
}

c10::Stream GuardImpl::getNewStream(c10::Device d, int /*priority*/) const { return to_c10(pooled_stream(d.index())); }

c10::Stream GuardImpl::exchangeStream(c10::Stream s) const { return to_c10(exchange_stream(from_c10(s))); }

bool GuardImpl::queryStream(const c10::Stream& stream) const {
  return translate("querying a stream", [&] { return from_c10(stream).query(); });
}

void GuardImpl::synchronizeStream(const c10::Stream& stream) const {
  translate("synchronizing a stream", [&] { from_c10(stream).synchronize(); });
}

void GuardImpl::synchronizeDevice(c10::DeviceIndex index) const {
  translate("synchronizing a device", [&] { device(index).synchronize(); });
}

void GuardImpl::recordDataPtrOnStream(const c10::DataPtr& data, const c10::Stream& stream) const {
  record_stream(data, stream);
}

void GuardImpl::destroyEvent(void* event, c10::DeviceIndex /*index*/) const noexcept {
  delete static_cast<Event*>(event);
}

void GuardImpl::record(void** event, const c10::Stream& stream, c10::DeviceIndex index,
                       c10::EventFlag flag) const {
  TORCH_CHECK(index == -1 || index == stream.device_index(), "hal: event on hal:", int(index),
              " cannot record a stream of hal:", int(stream.device_index()));
  Stream s = from_c10(stream);
  translate("recording an event", [&] {
    auto* e = static_cast<Event*>(*event);
    if (e == nullptr) {
      e = new Event(s.device(), flag == c10::EventFlag::BACKEND_DEFAULT);
      *event = e;
    }
    e->record(s);
  });
}

void GuardImpl::block(void* event, const c10::Stream& stream) const {
  if (event == nullptr) return;
  auto* e = static_cast<Event*>(event);
  Stream s = from_c10(stream);
  // Across plugins too: the stream's host-function thread waits, not this one (Stream::wait_event).
  translate("waiting for an event", [&] { s.wait_event(*e); });
}

bool GuardImpl::queryEvent(void* event) const {
  if (event == nullptr) return true;
  return translate("querying an event", [&] { return static_cast<Event*>(event)->query(); });
}

void GuardImpl::synchronizeEvent(void* event) const {
  if (event == nullptr) return;
  translate("synchronizing an event", [&] { static_cast<Event*>(event)->synchronize(); });
}

double GuardImpl::elapsedTime(void* start, void* end, c10::DeviceIndex /*index*/) const {
  TORCH_CHECK(start && end, "hal: both events must be recorded before elapsed_time");
  return translate("elapsed time",
                   [&] { return double(static_cast<Event*>(start)->elapsed_ms(*static_cast<Event*>(end))); });
}

C10_REGISTER_GUARD_IMPL(PrivateUse1, GuardImpl);

}  // namespace hal::bridge
