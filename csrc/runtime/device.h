// hal::Device: one device of one plugin, with its streams and its caching allocator.
//
// Devices are created by the Runtime (registry.h) and live until the process ends; a Device& or Device*
// is always valid. The plugin is reached through plugin().api(); every failing plugin call goes through
// plugin().check(status, call, name()).
#ifndef HAL_RUNTIME_DEVICE_H_
#define HAL_RUNTIME_DEVICE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hal/hal.h"
#include "runtime/compute.h"
#include "runtime/plugin.h"
#include "runtime/stream.h"
#include "runtime/wait.h"

namespace hal {

class Allocator;

// The name of local device |local_index| of plugin |plugin|: "<plugin>:<local index>", e.g. "emu:1". The one
// naming rule of devices (Device::name, HAL_VISIBLE_DEVICES).
std::string device_name(const std::string& plugin, int32_t local_index);

// "f32", "f16", "bf16", "f64", "f8e4m3", "i8", "u8", "i32", "i64", and (ABI 1.1) "bool", "i16", "u16", "u32",
// "u64", "c64", "c128"; nullptr for an unknown dtype.
const char* dtype_name(hal_dtype_t dtype);
// "cpu", "gpu", "npu", "other".
const char* device_kind_name(hal_device_kind_t kind);

// hal_device_properties_t in C++ terms, read with the struct_size protocol (fields the plugin did not
// write stay 0).
struct DeviceProperties {
  std::string name;
  std::string vendor;
  std::string kind;  // device_kind_name()
  uint32_t flags = 0;
  bool host_addressable = false;
  bool emulated = false;
  bool mappable = false;
  uint64_t total_memory = 0;
  // Only the dtypes with a known (non-zero) figure, in hal_dtype_t order: ("f32", 1.2e12), ...
  std::vector<std::pair<std::string, double>> peak_flops;
  double memory_bandwidth = 0;
  double link_bandwidth = 0;
  double host_link_bandwidth = 0;
  double relative_speed = 0;
};

class Device {
 public:
  // Called by the Runtime; reads the properties once (throws the plugin's error).
  Device(Plugin& plugin, int32_t local_index, int index);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  int index() const { return index_; }                // Global index in the Runtime.
  const std::string& name() const { return name_; }   // "<plugin>:<local index>"
  Plugin& plugin() const { return plugin_; }
  int32_t local_index() const { return local_index_; }

  const DeviceProperties& properties() const { return properties_; }
  // (free, total) bytes as the plugin reports them.
  std::pair<uint64_t, uint64_t> memory_info() const;
  // Whether the plugin has the entry |entry| (a plugin_entries() name).
  bool supports(const std::string& entry) const { return plugin_.has(entry); }

  // Host address aliasing |nbytes| of device memory at |ptr| (memory_map); throws HAL_STATUS_UNIMPLEMENTED
  // when the plugin lacks it. Undo with unmap(host_ptr, nbytes) before freeing the memory.
  void* map(void* ptr, size_t nbytes);
  void unmap(void* host_ptr, size_t nbytes);

  // The stream with id 0, created on first use and held by the device for the life of the process.
  // Lock-free after the first call (hot paths use it).
  Stream default_stream();
  // The calling thread's current stream on this device: the default stream unless exchange_current_stream
  // set another. There is one per thread and device in the process, shared by every consumer of the
  // runtime (hal._C and the torch bridge), so hal.current_stream() and torch.hal.current_stream() are the
  // same stream. Lock-free.
  Stream current_stream();
  // Makes |stream| (a stream of this device) the calling thread's current stream on this device and returns
  // the previous one; throws HAL_STATUS_INVALID_ARGUMENT for a stream of another device. The thread holds
  // its current stream (it stays alive while current, or until the thread exits).
  Stream exchange_current_stream(const Stream& stream);
  // A new stream (ids 1, 2, ..., never reused), destroyed when its last handle goes (stream.h). Keep the
  // handle for as long as the stream is used (a pool of them, as c10 keeps, to reuse streams).
  Stream create_stream();
  // The live stream with |id| (Stream::id(); 0 is the default stream). Throws HAL_STATUS_INVALID_ARGUMENT
  // for an id never created or a stream already destroyed (its last handle went).
  Stream stream(int64_t id);
  // Blocks until all work on every live stream of this device has completed; throws the first sticky error.
  void synchronize();
  // The same, abandoned when |should_stop| says so (wait.h): returns false then, with the work still queued.
  bool synchronize(const StopPredicate& should_stop);

  // The operators the device implements (kernel.h; empty when its plugin has none), read on first use.
  // Thread-safe; throws the plugin's error from op_list (and tries again on the next call).
  const OperatorTable& operators();

  // The device's caching allocator (allocator.h).
  Allocator& allocator() { return *allocator_; }

  // Called by a stream's last handle as it goes (stream.cpp): Device::stream(id) stops finding it.
  void forget_stream(int64_t id) noexcept;

 private:
  std::vector<Stream> live_streams();

  Plugin& plugin_;
  int32_t local_index_;
  int index_;
  std::string name_;
  DeviceProperties properties_;
  std::unique_ptr<Allocator> allocator_;
  std::once_flag operators_once_;
  std::unique_ptr<OperatorTable> operators_;  // Set once, under operators_once_.
  std::once_flag default_stream_once_;
  std::shared_ptr<StreamState> default_stream_;  // Set once, under default_stream_once_.
  std::mutex streams_mutex_;                      // Guards the two below.
  std::unordered_map<int64_t, std::weak_ptr<StreamState>> streams_;  // Live created streams by id.
  int64_t next_stream_id_ = 1;
};

}  // namespace hal

#endif  // HAL_RUNTIME_DEVICE_H_
