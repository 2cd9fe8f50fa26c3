// hal::Error: the one exception type of the runtime, and the one place plugin statuses become errors.
//
// Every failure the runtime reports is a hal::Error carrying a hal_status_t code (status.h), and, when it
// came from a plugin call, the plugin's name, the device name and the plugin's native error code.
// Plugin::check (plugin.h) is the only code that turns a plugin status into an Error; everything else
// throws through throw_error().
#ifndef HAL_RUNTIME_ERROR_H_
#define HAL_RUNTIME_ERROR_H_

#include <cstdint>
#include <stdexcept>
#include <string>

#include "hal/status.h"

namespace hal {

class Error : public std::runtime_error {
 public:
  // |message| is the full, already formatted text (what() returns it unchanged).
  Error(hal_status_t code, const std::string& message, std::string plugin = {}, std::string device = {},
        int32_t native_code = 0);

  hal_status_t code() const noexcept { return code_; }
  const std::string& plugin() const noexcept { return plugin_; }  // Empty when no plugin was involved.
  const std::string& device() const noexcept { return device_; }  // "emu:1"; empty when none.
  int32_t native_code() const noexcept { return native_code_; }   // The plugin's native code, or 0.

 private:
  hal_status_t code_;
  std::string plugin_;
  std::string device_;
  int32_t native_code_;
};

// A plugin that cannot be loaded (bad file, missing symbol, version mismatch, missing entries, initialize
// failed). code() is HAL_STATUS_UNAVAILABLE, or the status initialize returned.
class PluginLoadError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throw_error(hal_status_t code, const std::string& message);

// "3.00 GiB", "512.00 MiB", "12 bytes": for messages.
std::string format_bytes(uint64_t bytes);

}  // namespace hal

#endif  // HAL_RUNTIME_ERROR_H_
