#include "runtime/registry.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "runtime/allocator.h"

namespace hal {
namespace {

// The runtime is created once and deliberately never deleted (see registry.h, "Lifetime").
std::atomic<Runtime*> g_runtime{nullptr};
std::atomic<bool> g_shut_down{false};
std::atomic<bool> g_forked{false};
std::mutex g_init_mutex;
std::once_flag g_atfork_once;

constexpr const char* kShutDownMessage = "the hal runtime was shut down (no more work is accepted)";

// pthread_atfork child handler: the child must never reach the parent's plugins (see registry.h, "Fork").
void on_fork_child() {
  Runtime* runtime = g_runtime.load();
  if (runtime == nullptr) return;
  g_forked = true;
  for (Plugin* plugin : runtime->plugins()) plugin->close(kForkedChildMessage);
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(separator, start);
    std::string part = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    // Trim spaces; empty parts are dropped (an empty HAL_PLUGIN_PATH element never means ".").
    part.erase(0, part.find_first_not_of(" \t"));
    part.erase(part.find_last_not_of(" \t") + 1);
    if (!part.empty()) parts.push_back(part);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// libhal_plugin_*.so files of |dir|, sorted, with libhal_plugin_cpu.so first.
std::vector<std::string> scan_directory(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* entry = readdir(d)) {
      std::string name = entry->d_name;
      const std::string prefix = "libhal_plugin_", suffix = ".so";
      if (name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        names.push_back(name);
      }
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    const bool a_cpu = a == "libhal_plugin_cpu.so", b_cpu = b == "libhal_plugin_cpu.so";
    return a_cpu != b_cpu ? a_cpu : a < b;
  });
  std::vector<std::string> paths;
  for (const std::string& name : names) paths.push_back(dir + "/" + name);
  return paths;
}

// Absolute, symlink-free path; |path| unchanged when it cannot be resolved (dlopen then reports why).
std::string real_path(const std::string& path) {
  char resolved[PATH_MAX];
  return realpath(path.c_str(), resolved) ? std::string(resolved) : path;
}

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

bool RuntimeOptions::operator==(const RuntimeOptions& other) const {
  return plugin_paths == other.plugin_paths && plugin_dirs == other.plugin_dirs && use_env == other.use_env &&
         configs == other.configs;
}

Runtime& Runtime::init(const RuntimeOptions& options) {
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (g_forked.load()) throw_error(HAL_STATUS_UNAVAILABLE, std::string("hal: ") + kForkedChildMessage);
  if (Runtime* runtime = g_runtime.load()) {
    if (runtime->options_ != options) {
      throw_error(HAL_STATUS_INVALID_ARGUMENT,
                  "hal runtime already initialized with different options (init may only be repeated with "
                  "the same arguments)");
    }
    return *runtime;
  }
  if (g_forked.load()) throw_error(HAL_STATUS_UNAVAILABLE, std::string("hal: ") + kForkedChildMessage);
  if (g_shut_down.load()) throw_error(HAL_STATUS_UNAVAILABLE, "hal runtime was shut down");
  auto runtime = std::unique_ptr<Runtime>(new Runtime());
  runtime->options_ = options;
  runtime->load_all();
  try {
    runtime->assign_devices();
  } catch (...) {
    // No device was made (the filter is checked first): nothing holds the plugins, so they can go.
    for (auto it = runtime->plugins_.rbegin(); it != runtime->plugins_.rend(); ++it) (*it)->shutdown();
    throw;
  }
  g_runtime.store(runtime.release());
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, on_fork_child); });
  return *g_runtime.load();
}

bool Runtime::is_initialized() { return g_runtime.load() != nullptr; }

Runtime* Runtime::instance() noexcept { return g_forked.load() ? nullptr : g_runtime.load(); }

bool Runtime::in_forked_child() noexcept { return g_forked.load(); }

Runtime& Runtime::get() {
  if (g_forked.load()) throw_error(HAL_STATUS_UNAVAILABLE, std::string("hal: ") + kForkedChildMessage);
  Runtime* runtime = g_runtime.load();
  if (runtime == nullptr) {
    throw_error(HAL_STATUS_UNAVAILABLE, g_shut_down.load() ? "hal runtime was shut down"
                                                           : "hal runtime not initialized (call hal._C.init)");
  }
  return *runtime;
}

void Runtime::shutdown() {
  if (g_forked.load()) return;  // The parent's plugins are not this process's to touch.
  std::lock_guard<std::mutex> lock(g_init_mutex);
  Runtime* runtime = g_runtime.exchange(nullptr);
  if (runtime == nullptr) return;
  g_shut_down = true;
  // The leak check at exit (registry.h, "Validation"): before the plugins close, never waiting for a lock.
  // Quiet when clean: only plugins with violations or leaks are reported.
  for (const validation::Report& report : runtime->validation_reports(/*wait=*/false)) {
    if (report.violations > 0 || !report.leaks.empty()) validation::print(report);
  }
  for (Plugin* plugin : runtime->plugin_ptrs_) plugin->close(kShutDownMessage);
  // |runtime| itself is leaked: Devices and Plugins stay valid objects for handles that outlive shutdown.
}

void Runtime::load_all() {
  for (const std::string& dir : options_.plugin_dirs) {
    for (const std::string& path : scan_directory(dir)) load_one(path);
  }
  if (options_.use_env) {
    for (const std::string& entry : split(env("HAL_PLUGIN_PATH"), ':')) {
      if (is_directory(entry)) {
        for (const std::string& path : scan_directory(entry)) load_one(path);
      } else {
        load_one(entry);
      }
    }
  }
  for (const std::string& path : options_.plugin_paths) load_one(path);
}

void Runtime::load_one(const std::string& given_path) {
  const std::string path = real_path(given_path);
  if (std::find(loaded_real_paths_.begin(), loaded_real_paths_.end(), path) != loaded_real_paths_.end()) return;
  loaded_real_paths_.push_back(path);

  // The name decides the config and duplicates, so read the table before initializing.
  PluginInspection info = inspect_plugin(path);
  if (info.error) {
    load_errors_.push_back({given_path, *info.error});
    return;
  }
  for (const auto& plugin : plugins_) {
    if (plugin->name() == info.name) {
      load_errors_.push_back({given_path, "duplicate plugin '" + info.name + "' at " + path +
                                              ": already loaded from " + plugin->path()});
      return;
    }
  }
  std::string config;
  if (auto it = options_.configs.find(info.name); it != options_.configs.end()) config = it->second;
  if (options_.use_env) {
    std::string var = "HAL_PLUGIN_CONFIG_" + info.name;
    std::transform(var.begin(), var.end(), var.begin(), [](unsigned char c) { return std::toupper(c); });
    if (const char* value = std::getenv(var.c_str())) config = value;
  }
  try {
    plugins_.push_back(Plugin::load(path, config));
    plugin_ptrs_.push_back(plugins_.back().get());
  } catch (const Error& e) {
    load_errors_.push_back({given_path, e.what()});
  }
}

void Runtime::assign_devices() {
  // Every device of every plugin, in load order.
  std::vector<std::pair<Plugin*, int32_t>> all;
  for (Plugin* plugin : plugin_ptrs_) {
    for (int32_t i = 0; i < plugin->device_count(); ++i) all.emplace_back(plugin, i);
  }
  auto name_of = [](const std::pair<Plugin*, int32_t>& d) { return device_name(d.first->name(), d.second); };

  std::vector<std::pair<Plugin*, int32_t>> visible;
  const char* filter = options_.use_env ? std::getenv("HAL_VISIBLE_DEVICES") : nullptr;
  if (filter == nullptr) {
    visible = all;
  } else {
    for (const std::string& item : split(filter, ',')) {
      bool matched = false;
      for (const auto& d : all) {
        if (item == name_of(d) || item == d.first->name()) {
          matched = true;
          if (std::find(visible.begin(), visible.end(), d) == visible.end()) visible.push_back(d);
        }
      }
      if (!matched) {
        std::string names;
        for (const auto& d : all) names += (names.empty() ? "" : ", ") + name_of(d);
        throw_error(HAL_STATUS_INVALID_ARGUMENT, "HAL_VISIBLE_DEVICES names unknown device '" + item +
                                                     "' (available: " + (names.empty() ? "none" : names) + ")");
      }
    }
  }
  for (const auto& [plugin, local] : visible) {
    try {
      devices_.push_back(std::make_unique<Device>(*plugin, local, static_cast<int>(devices_.size())));
      device_ptrs_.push_back(devices_.back().get());
    } catch (const Error& e) {
      load_errors_.push_back({plugin->path(), e.what()});
    }
  }
}

std::vector<validation::Report> Runtime::validation_reports(bool wait) const {
  std::vector<validation::Report> reports;
  for (Plugin* plugin : plugin_ptrs_) {
    if (plugin->validation_slot() < 0) continue;
    validation::Held held;
    for (Device* device : device_ptrs_) {
      if (&device->plugin() != plugin) continue;
      if (!device->allocator().segment_bases(&held.segments, wait)) {
        held.uninspected_devices.push_back(device->local_index());
      }
    }
    reports.push_back(validation::report(plugin->validation_slot(), held));
  }
  return reports;
}

Device& Runtime::device(int index) const {
  if (index < 0 || index >= device_count()) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, "device index " + std::to_string(index) + " out of range (" +
                                                 std::to_string(device_count()) + " devices)");
  }
  return *devices_[index];
}

Device& Runtime::find_device(const std::string& name) const {
  std::string names;
  for (Device* d : device_ptrs_) {
    if (d->name() == name) return *d;
    names += (names.empty() ? "" : ", ") + d->name();
  }
  throw_error(HAL_STATUS_INVALID_ARGUMENT,
              "unknown device '" + name + "' (available: " + (names.empty() ? "none" : names) + ")");
}

}  // namespace hal
