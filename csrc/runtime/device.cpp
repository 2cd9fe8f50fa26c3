#include "runtime/device.h"

#include <cstring>

#include "runtime/allocator.h"

namespace hal {

std::string device_name(const std::string& plugin, int32_t local_index) {
  return plugin + ":" + std::to_string(local_index);
}

const char* dtype_name(hal_dtype_t dtype) {
  static const char* const kNames[HAL_DTYPE_END] = {"f32", "f16", "bf16", "f64", "f8e4m3", "i8",  "u8",  "i32",
                                                    "i64", "bool", "i16", "u16", "u32", "u64",    "c64", "c128"};
  return dtype >= 0 && dtype < HAL_DTYPE_END ? kNames[dtype] : nullptr;
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
      name_(device_name(plugin.name(), local_index)),
      properties_(read_properties(plugin, local_index, name_)),
      allocator_(std::make_unique<Allocator>(*this)) {}

Device::~Device() = default;

std::pair<uint64_t, uint64_t> Device::memory_info() const {
  uint64_t free_bytes = 0, total_bytes = 0;
  plugin_.check(plugin_.api().device_get_memory_info(local_index_, &free_bytes, &total_bytes),
                "device_get_memory_info", name_);
  return {free_bytes, total_bytes};
}

const OperatorTable& Device::operators() {
  std::call_once(operators_once_, [this] { operators_ = std::make_unique<OperatorTable>(*this); });
  return *operators_;
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

Stream Device::default_stream() {
  std::call_once(default_stream_once_, [this] {
    hal_stream_t handle = nullptr;
    plugin_.check(plugin_.api().stream_create(local_index_, &handle), "stream_create", name_);
    default_stream_ = Stream::adopt(*this, 0, handle).state_;
  });
  return Stream(default_stream_);
}

namespace {
// The calling thread's current stream per device index; empty (or past the end) = the default stream. The
// thread holds these streams: they are destroyed at the earliest when the thread exits.
thread_local std::vector<std::shared_ptr<StreamState>> t_current_streams;
}  // namespace

Stream Device::current_stream() {
  const size_t i = static_cast<size_t>(index_);
  if (i < t_current_streams.size() && t_current_streams[i]) return Stream(t_current_streams[i]);
  return default_stream();
}

Stream Device::exchange_current_stream(const Stream& stream) {
  if (&stream.device() != this) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, name_ + ": cannot make a stream of " + stream.device().name() +
                                                 " the current stream of " + name_);
  }
  Stream previous = current_stream();
  const size_t i = static_cast<size_t>(index_);
  if (t_current_streams.size() <= i) t_current_streams.resize(i + 1);
  t_current_streams[i] = stream.state_;
  return previous;
}

Stream Device::stream(int64_t id) {
  plugin_.api();  // A closed runtime or a forked child says so, before any lock is taken.
  if (id == 0) return default_stream();
  std::lock_guard<std::mutex> lock(streams_mutex_);
  auto it = streams_.find(id);
  std::shared_ptr<StreamState> state = it == streams_.end() ? nullptr : it->second.lock();
  if (!state) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT,
                name_ + ": no stream with id " + std::to_string(id) +
                    (id > 0 && id < next_stream_id_ ? " (it was destroyed when its last handle was dropped)"
                                                    : " (never created)"));
  }
  return Stream(std::move(state));
}

Stream Device::create_stream() {
  hal_stream_t handle = nullptr;
  plugin_.check(plugin_.api().stream_create(local_index_, &handle), "stream_create", name_);
  int64_t id;
  {
    std::lock_guard<std::mutex> lock(streams_mutex_);
    id = next_stream_id_++;
  }
  Stream stream = Stream::adopt(*this, id, handle);  // Outside the lock: a failure here destroys the stream.
  std::lock_guard<std::mutex> lock(streams_mutex_);
  streams_.emplace(id, stream.state_);
  return stream;
}

void Device::forget_stream(int64_t id) noexcept {
  std::lock_guard<std::mutex> lock(streams_mutex_);
  streams_.erase(id);
}

std::vector<Stream> Device::live_streams() {
  std::vector<Stream> live{default_stream()};
  std::lock_guard<std::mutex> lock(streams_mutex_);
  for (auto& [id, weak] : streams_) {
    if (auto state = weak.lock()) live.push_back(Stream(std::move(state)));
  }
  return live;
}

void Device::synchronize() {
  for (const Stream& s : live_streams()) s.synchronize();
}

bool Device::synchronize(const StopPredicate& should_stop) {
  for (const Stream& s : live_streams()) {
    if (!s.synchronize(should_stop)) return false;
  }
  return true;
}

}  // namespace hal
