#include "device.h"

#include <cstring>

#include "allocator.h"
#include "stream.h"

namespace hal {

const char* dtype_name(hal_dtype_t dtype) {
  static const char* const kNames[HAL_DTYPE_COUNT] = {"f32", "f16", "bf16", "f64", "f8e4m3",
                                                      "i8",  "u8",  "i32",  "i64"};
  return dtype >= 0 && dtype < HAL_DTYPE_COUNT ? kNames[dtype] : nullptr;
}

const char* device_kind_name(hal_device_kind_t kind) {
  switch (kind) {
    case HAL_DEVICE_KIND_CPU: return "cpu";
    case HAL_DEVICE_KIND_GPU: return "gpu";
    case HAL_DEVICE_KIND_NPU: return "npu";
    default: return "other";
  }
}

namespace {

DeviceProperties read_properties(const Plugin& plugin, int32_t local_index, const std::string& name) {
  hal_device_properties_t raw;
  std::memset(&raw, 0, sizeof(raw));
  raw.struct_size = sizeof(raw);
  plugin.check(plugin.api().device_get_properties(local_index, &raw), "device_get_properties", name);
  raw.name[HAL_DEVICE_NAME_MAX - 1] = '\0';
  raw.vendor[HAL_DEVICE_VENDOR_MAX - 1] = '\0';
  DeviceProperties p;
  p.name = raw.name;
  p.vendor = raw.vendor;
  p.kind = device_kind_name(raw.kind);
  p.flags = raw.flags;
  p.host_addressable = raw.flags & HAL_DEVICE_FLAG_HOST_ADDRESSABLE;
  p.emulated = raw.flags & HAL_DEVICE_FLAG_EMULATED;
  p.mappable = raw.flags & HAL_DEVICE_FLAG_MAPPABLE;
  p.total_memory = raw.total_memory_bytes;
  for (int d = 0; d < HAL_DTYPE_COUNT; ++d) {
    if (raw.peak_flops[d] != 0) p.peak_flops.emplace_back(dtype_name(d), raw.peak_flops[d]);
  }
  p.memory_bandwidth = raw.memory_bandwidth;
  p.link_bandwidth = raw.link_bandwidth;
  p.host_link_bandwidth = raw.host_link_bandwidth;
  p.relative_speed = raw.relative_speed;
  return p;
}

}  // namespace

Device::Device(Plugin& plugin, int32_t local_index, int index)
    : plugin_(plugin),
      local_index_(local_index),
      index_(index),
      name_(plugin.name() + ":" + std::to_string(local_index)),
      properties_(read_properties(plugin, local_index, name_)),
      allocator_(std::make_unique<Allocator>(*this)) {
  streams_.emplace_back();  // Slot 0: the default stream, created on first use.
}

Device::~Device() = default;

std::pair<uint64_t, uint64_t> Device::memory_info() const {
  uint64_t free_bytes = 0, total_bytes = 0;
  plugin_.check(plugin_.api().device_get_memory_info(local_index_, &free_bytes, &total_bytes),
                "device_get_memory_info", name_);
  return {free_bytes, total_bytes};
}

void* Device::map(void* ptr, size_t nbytes) {
  auto fn = plugin_.require(&hal_plugin_api_t::memory_map, "memory_map");
  void* host = nullptr;
  plugin_.check(fn(local_index_, ptr, nbytes, &host), "memory_map", name_);
  return host;
}

void Device::unmap(void* host_ptr, size_t nbytes) {
  auto fn = plugin_.require(&hal_plugin_api_t::memory_unmap, "memory_unmap");
  plugin_.check(fn(local_index_, host_ptr, nbytes), "memory_unmap", name_);
}

StreamState* Device::stream_state(int64_t id) {
  std::lock_guard<std::mutex> lock(streams_mutex_);
  if (id < 0 || id >= static_cast<int64_t>(streams_.size())) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, name_ + ": no stream with id " + std::to_string(id));
  }
  if (!streams_[id]) {  // Only the default stream is created lazily.
    hal_stream_t handle = nullptr;
    plugin_.check(plugin_.api().stream_create(local_index_, &handle), "stream_create", name_);
    streams_[id] = std::make_unique<StreamState>(StreamState{this, id, handle});
  }
  return streams_[id].get();
}

Stream Device::default_stream() {
  StreamState* s = default_stream_.load(std::memory_order_acquire);
  if (s == nullptr) {
    s = stream_state(0);
    default_stream_.store(s, std::memory_order_release);
  }
  return Stream(s);
}

namespace {
// The calling thread's current stream per device index; nullptr (or past the end) = the default stream.
// StreamStates live until the process ends, so these pointers never dangle.
thread_local std::vector<StreamState*> t_current_streams;
}  // namespace

Stream Device::current_stream() {
  const size_t i = static_cast<size_t>(index_);
  StreamState* s = i < t_current_streams.size() ? t_current_streams[i] : nullptr;
  return s != nullptr ? Stream(s) : default_stream();
}

Stream Device::exchange_current_stream(const Stream& stream) {
  if (&stream.device() != this) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, name_ + ": cannot make a stream of " + stream.device().name() +
                                                 " the current stream of " + name_);
  }
  Stream previous = current_stream();
  const size_t i = static_cast<size_t>(index_);
  if (t_current_streams.size() <= i) t_current_streams.resize(i + 1, nullptr);
  t_current_streams[i] = stream.state();
  return previous;
}

Stream Device::stream(int64_t id) { return Stream(stream_state(id)); }

Stream Device::create_stream() {
  hal_stream_t handle = nullptr;
  plugin_.check(plugin_.api().stream_create(local_index_, &handle), "stream_create", name_);
  std::lock_guard<std::mutex> lock(streams_mutex_);
  const int64_t id = static_cast<int64_t>(streams_.size());
  streams_.push_back(std::make_unique<StreamState>(StreamState{this, id, handle}));
  return Stream(streams_.back().get());
}

void Device::synchronize() {
  std::vector<StreamState*> states;
  {
    std::lock_guard<std::mutex> lock(streams_mutex_);
    for (auto& s : streams_) {
      if (s) states.push_back(s.get());
    }
  }
  for (StreamState* s : states) Stream(s).synchronize();
}

void Device::shutdown() noexcept {
  try {
    synchronize();
  } catch (...) {
  }
  allocator_->release_all();
  std::lock_guard<std::mutex> lock(streams_mutex_);
  for (auto& s : streams_) {
    if (s && s->handle) {
      try {
        plugin_.api().stream_destroy(s->handle);
      } catch (...) {
      }
      s->handle = nullptr;
    }
  }
}

}  // namespace hal
