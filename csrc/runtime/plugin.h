// hal::Plugin: one loaded plugin shared library, and inspection of a plugin file without loading it.
//
// Loading (Plugin::load) follows the rules of hal/plugin.h: dlopen(RTLD_NOW | RTLD_LOCAL) the path,
// read HAL_PLUGIN_ENTRY_SYMBOL, refuse the plugin (PluginLoadError naming the path) when
//   - the file is not a loadable shared library (the dlerror text is quoted),
//   - the entry symbol is missing, or returns NULL,
//   - struct_size is smaller than the ABI 1.0 table up to its last required entry,
//   - abi_major differs from the loader's, or abi_minor is below kMinAbiMinor (both versions are named),
//   - a required entry is NULL (all missing entries are named),
//   - the name is not [a-z0-9_]+,
//   - its extension chain (ABI 1.2, extension.h) is malformed (the link at fault is named),
// then copy the table into a zero-filled hal_plugin_api_t of the loader's size (only min(struct_size,
// sizeof) bytes: entries an older plugin lacks read as NULL, a newer plugin's extra entries are ignored)
// and call initialize with the config string.
//
// A file dlopen refuses is examined to say why in terms a user can act on: not an ELF file, a truncated one,
// 32-bit vs 64-bit, another byte order, another architecture ("is an ELF for AArch64, but this process is
// x86-64"), or not a shared library; dlopen's own text follows.
//
// Lifetime: a Plugin is created by the Runtime and never destroyed while the process runs (see
// registry.h). close() ends its use without calling into it (at interpreter exit, in a forked child);
// shutdown() calls the plugin's shutdown and dlcloses it (a plugin whose devices failed at init). After
// either, every call through api() throws HAL_STATUS_UNAVAILABLE, with the reason, instead of reaching
// the plugin.
//
// Validation: with HAL_VALIDATE set, load interposes the validation layer (validation.h): api() is then a table
// of validating trampolines over the plugin's own, and validation_slot() names the layer's state.
//
// Threading: all methods are thread-safe except load and shutdown, which the Runtime calls alone.
#ifndef HAL_RUNTIME_PLUGIN_H_
#define HAL_RUNTIME_PLUGIN_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hal/hal.h"
#include "runtime/error.h"

namespace hal {

// The oldest ABI minor version this loader accepts (with major == HAL_ABI_VERSION_MAJOR).
inline constexpr uint32_t kMinAbiMinor = 0;

// One entry of hal_plugin_api_t, in table order.
struct PluginEntry {
  const char* name;  // "memory_allocate"
  size_t offset;     // offsetof(hal_plugin_api_t, memory_allocate)
  bool required;
};
// Every function entry of the loader's hal_plugin_api_t, in table order.
const std::vector<PluginEntry>& plugin_entries();

// What a plugin file declares, read WITHOUT calling initialize (for `hal info`). Never throws: a file that
// would be refused has |error| set to the refusal reason, and whatever could be read is filled in.
struct PluginInspection {
  std::string path;     // As given.
  std::string name;     // Empty when unreadable.
  std::string version;
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
  size_t struct_size = 0;
  // Every entry of the loader's table -> present (non-NULL within the plugin's struct_size), in table order.
  std::vector<std::pair<std::string, bool>> entries;
  int32_t device_count = -1;         // -1: unknown (inspection does not initialize).
  // The extension chain (ABI 1.2, extension.h) as (name, version), in chain order; empty for older plugins.
  std::vector<std::pair<std::string, uint32_t>> extensions;
  std::optional<std::string> error;  // Set when Plugin::load would refuse the file (initialize not tried).
};
PluginInspection inspect_plugin(const std::string& path);

class Plugin {
 public:
  // Loads and initializes the plugin at |path| with |config| (may be empty: passed as NULL). Throws
  // PluginLoadError. |path| is used as given; the registry resolves it first.
  static std::unique_ptr<Plugin> load(const std::string& path, const std::string& config);

  // Reads the entry table of |path| and validates it without initializing. Used by load and inspect.
  // Returns the dlopen handle (caller closes it) and fills |out_api| (zero-filled beyond the plugin's
  // table) and |out_info|'s name, version, ABI and struct_size as far as they could be read, also when
  // it throws PluginLoadError.
  static void* open_table(const std::string& path, hal_plugin_api_t* out_api, PluginInspection* out_info);

  ~Plugin();
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const std::string& name() const { return name_; }
  const std::string& path() const { return path_; }  // Real path of the library.
  const std::string& version() const { return version_; }
  uint32_t abi_major() const { return abi_major_; }
  uint32_t abi_minor() const { return abi_minor_; }
  int32_t device_count() const { return device_count_; }
  // The same description as inspect_plugin, for a loaded plugin (with its device count).
  PluginInspection info() const;
  // The validation layer's slot (validation.h), or -1 when the plugin runs unvalidated.
  int validation_slot() const { return validation_slot_; }
  // "plugin 'emu' at /path/libhal_plugin_emu.so", for messages.
  std::string describe() const;

  // False once closed or shut down (or if load failed). Never throws.
  bool alive() const noexcept { return alive_.load(std::memory_order_acquire); }
  // The entry table. Throws HAL_STATUS_UNAVAILABLE once the plugin is closed or shut down.
  const hal_plugin_api_t& api() const;
  // The entry table, or nullptr once closed or shut down: for paths that must not throw (destructors).
  const hal_plugin_api_t* api_if_alive() const noexcept { return alive() ? &api_ : nullptr; }

  // The extension |name| (extension.h) when the plugin has it with at least |min_version| and a struct of at
  // least |min_struct_size| bytes (the fields the caller reads), else nullptr. Plugins before ABI 1.2 have none.
  const hal_extension_t* find_extension(std::string_view name, uint32_t min_version = 1,
                                        size_t min_struct_size = sizeof(hal_extension_t)) const;
  template <typename Extension>
  const Extension* find_extension(std::string_view name, uint32_t min_version) const {
    return reinterpret_cast<const Extension*>(find_extension(name, min_version, sizeof(Extension)));
  }

  // Whether the optional entry |name| (a plugin_entries() name) is present. False for unknown names.
  bool has(std::string_view entry) const;

  // Returns the entry |member| or throws HAL_STATUS_UNIMPLEMENTED "plugin 'x' does not support <entry>".
  template <typename Fn>
  Fn require(Fn hal_plugin_api_t::*member, const char* entry) const {
    Fn fn = api().*member;
    if (fn == nullptr) throw_unimplemented(entry);
    return fn;
  }

  // THE place a plugin status becomes an error. Returns normally for HAL_STATUS_OK; otherwise reads the
  // calling thread's get_last_error and throws Error:
  //   "<device> (plugin 'emu' at /p/libhal_plugin_emu.so): <call> failed: <STATUS>: <message> [native code N]"
  // |device| may be empty ("plugin 'emu' at ...: <call> failed: ..."). Must be called on the thread that
  // made the call, before any other call into the plugin.
  void check(hal_status_t status, const char* call, const std::string& device = {}) const;
  // The calling thread's last error of this plugin (get_last_error, read whole): the message, and the
  // native code in |*out_native| when given. What check() reports; also for callers that format their own
  // message (the allocator's out of memory).
  std::string last_error(int32_t* out_native = nullptr) const;

  // Ends the use of the plugin without calling into it: api() then throws HAL_STATUS_UNAVAILABLE saying
  // |reason| (a string literal; it must outlive the process). Async-signal-safe (a fork child handler).
  void close(const char* reason) noexcept;
  // Calls the plugin's shutdown and dlcloses it. Idempotent. Every handle and allocation must be released.
  void shutdown();

 private:
  Plugin() = default;
  [[noreturn]] void throw_unimplemented(const char* entry) const;

  void* handle_ = nullptr;
  hal_plugin_api_t api_{};
  std::string name_, path_, version_;
  uint32_t abi_major_ = 0, abi_minor_ = 0;
  int32_t device_count_ = 0;
  int validation_slot_ = -1;
  std::atomic<bool> alive_{false};
  std::atomic<const char*> closed_reason_{"the plugin is shut down"};
};

}  // namespace hal

#endif  // HAL_RUNTIME_PLUGIN_H_
