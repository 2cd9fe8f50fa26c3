// Current, default and pooled streams of the torch bridge (streams.h).
#include "streams.h"

#include <mutex>
#include <unordered_map>
#include <vector>

#include "runtime_access.h"

namespace hal::bridge {
namespace {

constexpr size_t kStreamPoolSize = 8;  // Streams handed out round robin by getNewStream.

}  // namespace

Stream current_stream(c10::DeviceIndex index) {
  Device& dev = device(index);
  return translate("current stream", [&] { return dev.current_stream(); });
}

Stream default_stream(c10::DeviceIndex index) {
  Device& dev = device(index);
  return translate("default stream", [&] { return dev.default_stream(); });
}

Stream exchange_stream(const Stream& stream) {
  return translate("setting the current stream", [&] { return stream.device().exchange_current_stream(stream); });
}

Stream stream_of(c10::DeviceIndex index, int64_t id) {
  Device& dev = device(index);
  return translate("stream", [&] { return id == 0 ? dev.default_stream() : dev.stream(id); });
}

Stream pooled_stream(c10::DeviceIndex index) {
  // The pool holds the streams' handles, so the streams live as long as the pool (the process).
  struct Pool {
    std::vector<Stream> streams;
    size_t next = 0;
  };
  static std::mutex mutex;
  static std::unordered_map<int, Pool> pools;
  Device& dev = device(index);
  std::lock_guard<std::mutex> lock(mutex);
  Pool& pool = pools[dev.index()];
  const size_t slot = pool.next++ % kStreamPoolSize;
  if (slot < pool.streams.size()) return pool.streams[slot];
  pool.streams.push_back(translate("creating a stream", [&] { return dev.create_stream(); }));
  return pool.streams.back();
}

c10::Stream to_c10(const Stream& stream) {
  return c10::Stream(c10::Stream::UNSAFE, c10::Device(kHal, static_cast<c10::DeviceIndex>(stream.device().index())),
                     stream.id());
}

Stream from_c10(const c10::Stream& stream) {
  TORCH_CHECK(stream.device_type() == kHal, "hal: expected a hal stream, got one of ", stream.device());
  return stream_of(stream.device_index(), stream.id());
}

}  // namespace hal::bridge
