#include "runtime/error.h"

#include <cstdio>

namespace hal {

Error::Error(hal_status_t code, const std::string& message, std::string plugin, std::string device,
             int32_t native_code)
    : std::runtime_error(message),
      code_(code),
      plugin_(std::move(plugin)),
      device_(std::move(device)),
      native_code_(native_code) {}

void throw_error(hal_status_t code, const std::string& message) { throw Error(code, message); }

std::string format_bytes(uint64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f %s", value, kUnits[unit]);
  return text;
}

}  // namespace hal
