// hal::Stream and hal::Event: value handles over the plugin's streams and events.
//
// A Stream is (device, id): cheap to copy, comparable, hashable by (device index, id). Id 0 is the device's
// default stream. Stream handles own the underlying hal_stream_t together (a shared count): when the last
// handle goes, the stream is destroyed (stream_destroy, which first lets its queued work finish), so a
// Stream never dangles and a dropped stream costs nothing (the emu plugin's worker thread ends). Holders of
// a stream are: every Stream value, the Device (its default stream, for the life of the process), a thread
// whose current stream it is (device.h), and an Allocation made on it (allocator.h). Ids are never reused:
// Device::stream(id) of a destroyed stream throws. Memory freed with work still queued on a stream stays
// safe when that stream goes: the allocator is told (Allocator::stream_destroying/_destroyed). The last
// handle must not be dropped by a host function of the same stream (launch_host_func): that case is
// detected and the stream is destroyed on a helper thread instead.
//
// An Event owns its hal_event_t through a shared state: copies share it; the last copy destroys it (a no-op
// after Runtime::shutdown).
//
// Copies are asynchronous, as in stream.h of the ABI: they are queued on the stream and return at once.
// The CALLER keeps host buffers alive and unchanged until the copy completed (synchronize the stream or an
// event recorded after it). Exceptions, which are synchronous and say so below: memset without the plugin's
// memset_async, and copy_peer staging through the host.
#ifndef HAL_RUNTIME_STREAM_H_
#define HAL_RUNTIME_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "hal/hal.h"
#include "runtime/wait.h"

namespace hal {

class Device;

// Shared by the Stream handles of one stream (see above). Internal; use Stream.
struct StreamState {
  Device* device;
  int64_t id;
  hal_stream_t handle;
};

class Event;

class Stream {
 public:
  Device& device() const { return *state_->device; }
  int64_t id() const { return state_->id; }            // Stable per device; 0 = default stream.
  hal_stream_t native() const { return state_->handle; }
  StreamState* state() const { return state_.get(); }  // Identity (equal for every handle of one stream).

  void synchronize() const;   // Blocks; throws the stream's sticky error.
  // The same, abandoned when |should_stop| says so (wait.h): returns false then, with the work still queued.
  bool synchronize(const StopPredicate& should_stop) const;
  bool query() const;         // True when all queued work has completed; never blocks.
  // Later work waits for |event|'s latest record (at the time of this call). An event of another plugin is
  // waited for by a host function of this stream (launch_host_func; without it, the host waits here): the
  // plugins share no queue, so the host thread does not block, this stream's host-function thread does.
  void wait_event(const Event& event) const;

  // Host -> device, device -> host, device -> device (both on this stream's device).
  void copy_h2d(void* dst, const void* src, size_t nbytes) const;
  void copy_d2h(void* dst, const void* src, size_t nbytes) const;
  void copy_d2d(void* dst, const void* src, size_t nbytes) const;
  // Queued with memset_async when the plugin has it; otherwise copies a host buffer filled with |value|
  // and synchronizes the stream before returning (the buffer must outlive the copy).
  void memset(void* dst, uint8_t value, size_t nbytes) const;
  // Runs |fn| on a plugin thread after the work queued so far. Throws HAL_STATUS_UNIMPLEMENTED when the
  // plugin lacks launch_host_func. |fn| is destroyed after it ran; it must not throw (an exception is
  // swallowed) and must not synchronize this stream.
  void launch_host_func(std::function<void()> fn) const;

  bool operator==(const Stream& other) const { return state_ == other.state_; }
  bool operator!=(const Stream& other) const { return state_ != other.state_; }

 private:
  friend class Device;  // Creates streams; keeps weak references for Device::stream(id).
  friend class Event;   // Remembers the stream of its latest record.
  explicit Stream(std::shared_ptr<StreamState> state) : state_(std::move(state)) {}
  // Takes ownership of |handle| (created on |device| by the caller) as stream |id|: the last handle destroys it.
  static Stream adopt(Device& device, int64_t id, hal_stream_t handle);
  std::shared_ptr<StreamState> state_;
};

// Copies |nbytes| from |src| (on src_stream's device) to |dst| (on dst_stream's device), for any two
// devices:
//  - same device: memcpy_d2d_async on dst_stream, after dst_stream waits for src_stream's work so far;
//  - same plugin with memcpy_peer_async: the same, with memcpy_peer_async (unless it answers
//    HAL_STATUS_UNIMPLEMENTED for this pair of devices: then staged as below);
//  - otherwise staged through a host buffer in chunks: d2h on src_stream, synchronize it, h2d on
//    dst_stream, synchronize it. The staged path returns only when the copy has completed.
// In every case work queued later on dst_stream sees the data.
void copy_peer(const Stream& dst_stream, void* dst, const Stream& src_stream, const void* src, size_t nbytes);

class Event {
 public:
  // An event on |device|; with |timing|, elapsed_ms can be used on it.
  explicit Event(Device& device, bool timing = true);

  Device& device() const;
  hal_event_t native() const;
  void record(const Stream& stream) const;  // |stream| must belong to the same plugin.
  std::optional<Stream> recorded_on() const;  // The stream of the latest record, while it lives.
  void synchronize() const;
  bool synchronize(const StopPredicate& should_stop) const;  // As Stream::synchronize(should_stop).
  bool query() const;
  // Milliseconds from this event's completion to |end|'s. Both recorded, completed and with timing.
  float elapsed_ms(const Event& end) const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace hal

#endif  // HAL_RUNTIME_STREAM_H_
