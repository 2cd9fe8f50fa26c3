// hal::Runtime: the one process-wide registry of plugins and devices.
//
// Discovery (Runtime::init). Plugins are loaded, in this order, from
//   1. RuntimeOptions::plugin_dirs (the package's plugins/ folder, passed in by Python): each scanned for
//      libhal_plugin_*.so, with libhal_plugin_cpu.so first, then by file name;
//   2. env HAL_PLUGIN_PATH when use_env: a colon-separated list of files or directories, in the order
//      given; a directory is scanned the same way; empty elements are ignored (they never mean ".");
//   3. RuntimeOptions::plugin_paths: files, in the order given, used as given (a relative path is resolved
//      against the current directory because the caller named it explicitly).
// So the bundled plugins' devices always come first (cpu:0 is hal:0 whatever else is installed), and a
// plugin added later never renumbers the devices before it. The current directory is never searched
// implicitly.
//
// Failures never stop discovery: a plugin that cannot be loaded is recorded in load_errors() as
// (path, message) and the others keep working. The same real path found twice is loaded once, silently.
// A second plugin with an already loaded name is not loaded (the first in the order above wins, so a
// bundled plugin is never replaced by HAL_PLUGIN_PATH); it is recorded as a load error naming both
// paths. The per-plugin config string is configs[name], overridden by env HAL_PLUGIN_CONFIG_<NAME>
// (upper case) when use_env.
//
// Devices. Global device indices are assigned in plugin load order, then local index. Device names are
// device_name(plugin, local index) (device.h). When use_env and HAL_VISIBLE_DEVICES is set (comma-separated
// device names "emu:1" or plugin names "emu" meaning all its devices), only those devices are visible, in
// the order listed (duplicates dropped); an unknown name makes init throw HAL_STATUS_INVALID_ARGUMENT
// naming it.
//
// Lifetime. The Runtime, its Plugins and Devices are created by init and never deleted (deliberately
// leaked, so no static destructor races interpreter exit). Streams are destroyed when their last handle
// goes (stream.h); memory and events when freed. shutdown() (called once at exit, by hal._C's atexit hook)
// closes the runtime: every later call into a plugin throws HAL_STATUS_UNAVAILABLE ("shut down") and frees,
// stream and event releases become no-ops, so objects and threads that outlive it are harmless. It does
// not wait for queued work, synchronize, free memory, destroy streams or shut the plugins down: another
// thread may still be inside a plugin call, or work still queued (an exiting process must neither tear
// memory and threads from under it nor wait for it). What the runtime holds is left to the OS, as CUDA
// leaves a context at exit; plugins are never unloaded.
//
// Validation (HAL_VALIDATE, validation.h). validation_reports() says, per validated plugin, what the layer found:
// violations, and leaks, which are the live plugin allocations that no caching allocator of the runtime holds
// as a segment (the cache is not a leak, and neither are streams, events and memory still held by objects
// alive at the time; those are listed as live). shutdown() prints the reports of plugins with violations or leaks to stderr: that is the leak
// check at exit, true although the runtime releases nothing then.
//
// Fork. A child forked after init cannot use the parent's devices (plugin threads do not survive fork): in
// the child every plugin is closed with kForkedChildMessage, Runtime::get() and init throw it,
// instance() is nullptr and shutdown() does nothing, so the child exits normally. A child of a process
// that never called init may init on its own.
//
// Threading. init and shutdown must not race other calls; everything else is thread-safe.
#ifndef HAL_RUNTIME_REGISTRY_H_
#define HAL_RUNTIME_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/plugin.h"
#include "runtime/validation.h"

namespace hal {

// What a forked child is told when it uses devices (the torch bridge says the same).
inline constexpr const char* kForkedChildMessage =
    "cannot use HAL devices in a process forked after they were initialized (the plugins' threads and "
    "device state do not survive fork). Use the 'spawn' or 'forkserver' start method of multiprocessing, "
    "or initialize devices only in the child.";

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
  // stays uninitialized), and HAL_STATUS_UNAVAILABLE in a forked child (see "Fork"). Never throws for a
  // broken plugin (see load_errors).
  static Runtime& init(const RuntimeOptions& options);
  static bool is_initialized();
  // The runtime; throws HAL_STATUS_UNAVAILABLE when init has not run or shutdown has.
  static Runtime& get();
  // The runtime, or nullptr when not initialized, shut down, or in a forked child. Never throws (for
  // device-count style queries that must not fail).
  static Runtime* instance() noexcept;
  // See "Lifetime" above. Idempotent; a no-op when never initialized and in a forked child.
  static void shutdown();
  // Whether this process is a child forked after init (see "Fork"). Never throws.
  static bool in_forked_child() noexcept;

  const RuntimeOptions& options() const { return options_; }
  const std::vector<Plugin*>& plugins() const { return plugin_ptrs_; }
  // Every plugin found but not loaded, in discovery order (also for messages such as torch's "invalid device
  // index": a device may be missing because its plugin is listed here).
  const std::vector<LoadError>& load_errors() const { return load_errors_; }

  int device_count() const noexcept { return static_cast<int>(devices_.size()); }
  // Throws HAL_STATUS_INVALID_ARGUMENT for an index out of range.
  Device& device(int index) const;
  // By name ("emu:1"); throws HAL_STATUS_INVALID_ARGUMENT listing the available names.
  Device& find_device(const std::string& name) const;
  const std::vector<Device*>& devices() const { return device_ptrs_; }

  // One report per plugin loaded with the validation layer (see "Validation"); empty when it is off. With
  // |wait| false a busy allocator is not waited for (its device's allocations are then not called leaks).
  std::vector<validation::Report> validation_reports(bool wait = true) const;

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
