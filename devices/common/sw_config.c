// What the software plugins' configuration strings share (sw_stream.h).
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sw_stream.h"

uint64_t sw_parse_size(const char* text) {
  static const struct { const char* suffix; double scale; } units[] = {
      {"", 1.0}, {"B", 1.0}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
      {"TiB", 1099511627776.0}};
  char* end;
  errno = 0;
  double value = strtod(text, &end);
  if (end == text || errno != 0 || !(value > 0)) return 0;
  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
    if (strcmp(end, units[i].suffix) == 0) {
      double bytes = value * units[i].scale;
      return bytes >= 1.0 && bytes < 18e18 ? (uint64_t)bytes : 0;
    }
  }
  return 0;
}
