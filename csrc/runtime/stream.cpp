#include "runtime/stream.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/device.h"

namespace hal {
namespace {

// Host staging chunk for copies between plugins without a peer path.
constexpr size_t kStagingChunk = size_t{8} << 20;

// Set while a host function runs on a plugin's thread: a stream dropped there may be that thread's own.
thread_local bool t_in_host_func = false;

void host_func_trampoline(void* user_data) {
  auto* fn = static_cast<std::function<void()>*>(user_data);
  t_in_host_func = true;
  try {
    (*fn)();
  } catch (abi::__forced_unwind&) {
    throw;  // The thread is being ended (pthread_exit: an exiting Python ends threads that want the GIL).
  } catch (...) {
    // Nowhere to report it: the plugin's host thread must not unwind.
  }
  delete fn;
  t_in_host_func = false;
}

// The deleter of a StreamState: runs when its last handle goes (stream.h).
void release_stream(StreamState* state) noexcept {
  Device& device = *state->device;
  if (!device.plugin().alive()) {  // Closed at exit, or a forked child: the stream is left to the OS.
    delete state;
    return;
  }
  device.forget_stream(state->id);
  auto destroy = [state, &device] {
    try {
      // The allocator first turns this stream's uses of memory into events, then, once stream_destroy let
      // the queued work finish, forgets the stream in its pools.
      device.allocator().stream_destroying(state);
      device.plugin().api().stream_destroy(state->handle);
      device.allocator().stream_destroyed(state);
    } catch (...) {
      // The runtime closed meanwhile (interpreter exit): leave the stream to the OS.
    }
    delete state;
  };
  if (t_in_host_func) {
    std::thread(destroy).detach();  // stream_destroy would wait for this very host function.
  } else {
    destroy();
  }
}

}  // namespace

Stream Stream::adopt(Device& device, int64_t id, hal_stream_t handle) {
  // Should the control block fail to allocate, shared_ptr runs the deleter: the stream is destroyed.
  return Stream(std::shared_ptr<StreamState>(new StreamState{&device, id, handle}, release_stream));
}

void Stream::synchronize() const {
  const Plugin& p = device().plugin();
  p.check(p.api().stream_synchronize(native()), "stream_synchronize", device().name());
}

bool Stream::synchronize(const StopPredicate& should_stop) const {
  if (should_stop && !wait_until([this] { return query(); }, should_stop)) return false;
  synchronize();  // Immediate once the queue is empty; reports what a plain synchronize would.
  return true;
}

bool Stream::query() const {
  const Plugin& p = device().plugin();
  hal_status_t status = p.api().stream_query(native());
  if (status == HAL_STATUS_NOT_READY) return false;
  p.check(status, "stream_query", device().name());
  return true;
}

void Stream::wait_event(const Event& event) const {
  const Plugin& p = device().plugin();
  if (&event.device().plugin() == &p) {
    p.check(p.api().stream_wait_event(native(), event.native()), "stream_wait_event", device().name());
    return;
  }
  // An event of another plugin: the plugins share no queue, so this stream's host thread does the waiting.
  // The record this call must wait for is snapshot now, as a marker on the stream |event| was last recorded
  // on (a marker there completes once everything queued on it so far has, that record included), so a
  // later record of |event| changes nothing. Without host functions here, the host waits instead.
  const std::optional<Stream> recorded_on = event.recorded_on();
  if (!recorded_on) return;  // Never recorded, or its stream is gone (its work with it): complete.
  Event snapshot(recorded_on->device(), /*timing=*/false);
  snapshot.record(*recorded_on);
  if (p.api().launch_host_func == nullptr) {
    snapshot.synchronize();
    return;
  }
  launch_host_func([snapshot] {
    try {
      snapshot.synchronize();
    } catch (const std::exception&) {
      // The other stream failed: its own synchronize reports that; this stream's order holds regardless.
    }
  });
}

void Stream::copy_h2d(void* dst, const void* src, size_t nbytes) const {
  const Plugin& p = device().plugin();
  p.check(p.api().memcpy_h2d_async(native(), dst, src, nbytes), "memcpy_h2d_async", device().name());
}

void Stream::copy_d2h(void* dst, const void* src, size_t nbytes) const {
  const Plugin& p = device().plugin();
  p.check(p.api().memcpy_d2h_async(native(), dst, src, nbytes), "memcpy_d2h_async", device().name());
}

void Stream::copy_d2d(void* dst, const void* src, size_t nbytes) const {
  const Plugin& p = device().plugin();
  p.check(p.api().memcpy_d2d_async(native(), dst, src, nbytes), "memcpy_d2d_async", device().name());
}

void Stream::memset(void* dst, uint8_t value, size_t nbytes) const {
  const Plugin& p = device().plugin();
  if (p.api().memset_async != nullptr) {
    p.check(p.api().memset_async(native(), dst, value, nbytes), "memset_async", device().name());
    return;
  }
  // Fallback: the filled buffer must outlive the copy, so wait for it.
  std::vector<uint8_t> filled(std::min(nbytes, kStagingChunk), value);
  for (size_t done = 0; done < nbytes; done += filled.size()) {
    copy_h2d(static_cast<char*>(dst) + done, filled.data(), std::min(filled.size(), nbytes - done));
  }
  synchronize();
}

void Stream::launch_host_func(std::function<void()> fn) const {
  const Plugin& p = device().plugin();
  auto launch = p.require(&hal_plugin_api_t::launch_host_func, "launch_host_func");
  auto* heap_fn = new std::function<void()>(std::move(fn));
  hal_status_t status = launch(native(), host_func_trampoline, heap_fn);
  if (status != HAL_STATUS_OK) {
    delete heap_fn;
    p.check(status, "launch_host_func", device().name());
  }
}

void copy_peer(const Stream& dst_stream, void* dst, const Stream& src_stream, const void* src, size_t nbytes) {
  Device& dst_device = dst_stream.device();
  Device& src_device = src_stream.device();
  Plugin& plugin = dst_device.plugin();
  const bool same_device = &dst_device == &src_device;
  if (same_device || (&plugin == &src_device.plugin() && plugin.api().memcpy_peer_async != nullptr)) {
    if (src_stream != dst_stream) {
      Event ready(src_device, /*timing=*/false);
      ready.record(src_stream);
      dst_stream.wait_event(ready);  // Destroying |ready| now is allowed (stream.h).
    }
    if (same_device) {
      dst_stream.copy_d2d(dst, src, nbytes);
      return;
    }
    hal_status_t status = plugin.api().memcpy_peer_async(dst_stream.native(), dst, dst_device.local_index(),
                                                         src, src_device.local_index(), nbytes);
    if (status != HAL_STATUS_UNIMPLEMENTED) {  // UNIMPLEMENTED for this pair: stage through the host.
      plugin.check(status, "memcpy_peer_async", dst_device.name());
      return;
    }
  }
  // Staged through the host, chunk by chunk. dst_stream's earlier work is ordered by the stream itself.
  std::vector<char> staging(std::min(nbytes, kStagingChunk));
  for (size_t done = 0; done < nbytes; done += staging.size()) {
    const size_t n = std::min(staging.size(), nbytes - done);
    src_stream.copy_d2h(staging.data(), static_cast<const char*>(src) + done, n);
    src_stream.synchronize();
    dst_stream.copy_h2d(static_cast<char*>(dst) + done, staging.data(), n);
    dst_stream.synchronize();
  }
}

struct Event::State {
  Device* device;
  hal_event_t handle = nullptr;
  std::mutex mutex;
  std::weak_ptr<StreamState> recorded_on;  // The stream of the latest record, for waits of other plugins.
  ~State() {
    if (handle == nullptr) return;
    if (const hal_plugin_api_t* api = device->plugin().api_if_alive()) api->event_destroy(handle);
  }
};

Event::Event(Device& device, bool timing) : state_(std::make_shared<State>()) {
  state_->device = &device;
  const Plugin& p = device.plugin();
  p.check(p.api().event_create(device.local_index(), timing ? HAL_EVENT_FLAG_TIMING : 0, &state_->handle),
          "event_create", device.name());
}

Device& Event::device() const { return *state_->device; }

hal_event_t Event::native() const { return state_->handle; }

void Event::record(const Stream& stream) const {
  const Plugin& p = device().plugin();
  if (&stream.device().plugin() != &p) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, device().name() + ": cannot record an event on a stream of " +
                                                 stream.device().name() + " (another plugin)");
  }
  p.check(p.api().event_record(native(), stream.native()), "event_record", device().name());
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->recorded_on = stream.state_;
}

std::optional<Stream> Event::recorded_on() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  std::shared_ptr<StreamState> stream = state_->recorded_on.lock();
  if (!stream) return std::nullopt;
  return Stream(std::move(stream));
}

void Event::synchronize() const {
  const Plugin& p = device().plugin();
  p.check(p.api().event_synchronize(native()), "event_synchronize", device().name());
}

bool Event::synchronize(const StopPredicate& should_stop) const {
  if (should_stop && !wait_until([this] { return query(); }, should_stop)) return false;
  synchronize();
  return true;
}

bool Event::query() const {
  const Plugin& p = device().plugin();
  hal_status_t status = p.api().event_query(native());
  if (status == HAL_STATUS_NOT_READY) return false;
  p.check(status, "event_query", device().name());
  return true;
}

float Event::elapsed_ms(const Event& end) const {
  const Plugin& p = device().plugin();
  float ms = 0;
  p.check(p.api().event_elapsed_time(native(), end.native(), &ms), "event_elapsed_time", device().name());
  return ms;
}

}  // namespace hal
