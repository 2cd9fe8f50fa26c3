// hal::Runtime: the one process-wide registry of plugins and devices.
//
// Discovery (Runtime::init). Plugins are loaded, in this order, from
//   1. RuntimeOptions::plugin_paths: files, used as given (a relative path is resolved against the current
//      directory because the caller named it explicitly);
//   2. env HAL_PLUGIN_PATH when use_env: a colon-separated list of files or directories; a directory is
//      scanned for libhal_plugin_*.so (sorted); empty elements are ignored (they never mean ".");
//   3. RuntimeOptions::plugin_dirs (the package's plugins/ folder, passed in by Python): scanned the same
//      way, with libhal_plugin_cpu.so first.
// The current directory is never searched implicitly.
//
// Failures never stop discovery: a plugin that cannot be loaded is recorded in load_errors() as
// (path, message) and the others keep working. The same real path found twice is loaded once, silently.
// A second plugin with an already loaded name is not loaded; it is recorded as a load error naming both
// paths. The per-plugin config string is configs[name], overridden by env HAL_PLUGIN_CONFIG_<NAME>
// (upper case) when use_env.
//
// Devices. Global device indices are assigned in plugin load order, then local index. Device names are
// "<plugin>:<local index>". When use_env and HAL_VISIBLE_DEVICES is set (comma-separated device names
// "emu:1" or plugin names "emu" meaning all its devices), only those devices are visible, in the order
// listed (duplicates dropped); an unknown name makes init throw HAL_STATUS_INVALID_ARGUMENT naming it.
//
// Lifetime. The Runtime, its Plugins and Devices are created by init and never deleted (deliberately
// leaked, so no static destructor races interpreter exit). shutdown() (called once at exit, by hal._C's
// atexit hook) synchronizes every device, releases streams, events and memory the runtime holds, shuts the
// plugins down and unloads them in reverse load order. After it, calls into a plugin throw
// HAL_STATUS_UNAVAILABLE and frees become no-ops, so objects that outlive it are harmless.
//
// Threading. init and shutdown must not race other calls; everything else is thread-safe.
#ifndef HAL_RUNTIME_REGISTRY_H_
#define HAL_RUNTIME_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "plugin.h"

namespace hal {

struct RuntimeOptions {
  std::vector<std::string> plugin_paths;
  std::vector<std::string> plugin_dirs;
  bool use_env = true;
  std::map<std::string, std::string> configs;  // plugin name -> config string

  bool operator==(const RuntimeOptions& other) const;
  bool operator!=(const RuntimeOptions& other) const { return !(*this == other); }
};

struct LoadError {
  std::string path;
  std::string message;
};

class Runtime {
 public:
  // Initializes the process-wide runtime. Calling it again with equal options is a no-op; with different
  // options it throws HAL_STATUS_INVALID_ARGUMENT. Throws on a bad HAL_VISIBLE_DEVICES (the runtime then
  // stays uninitialized). Never throws for a broken plugin (see load_errors).
  static Runtime& init(const RuntimeOptions& options);
  static bool is_initialized();
  // The runtime; throws HAL_STATUS_UNAVAILABLE when init has not run or shutdown has.
  static Runtime& get();
  // The runtime, or nullptr when not initialized or shut down. Never throws (for device-count style
  // queries that must not fail).
  static Runtime* instance() noexcept;
  // See "Lifetime" above. Idempotent; a no-op when never initialized.
  static void shutdown();

  const RuntimeOptions& options() const { return options_; }
  const std::vector<Plugin*>& plugins() const { return plugin_ptrs_; }
  const std::vector<LoadError>& load_errors() const { return load_errors_; }

  int device_count() const noexcept { return static_cast<int>(devices_.size()); }
  // Throws HAL_STATUS_INVALID_ARGUMENT for an index out of range.
  Device& device(int index) const;
  // By name ("emu:1"); throws HAL_STATUS_INVALID_ARGUMENT listing the available names.
  Device& find_device(const std::string& name) const;
  const std::vector<Device*>& devices() const { return device_ptrs_; }

 private:
  Runtime() = default;
  void load_all();
  void load_one(const std::string& path);
  void assign_devices();

  RuntimeOptions options_;
  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::vector<Plugin*> plugin_ptrs_;
  std::vector<LoadError> load_errors_;
  std::vector<std::string> loaded_real_paths_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::vector<Device*> device_ptrs_;
};

}  // namespace hal

#endif  // HAL_RUNTIME_REGISTRY_H_
