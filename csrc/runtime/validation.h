// hal::validation: the validation layer, after Unified Runtime's (source/loader/layers/validation/).
//
// With HAL_VALIDATE=1 in the environment when a plugin loads, the loader (Plugin::load) hands the runtime a
// copy of the plugin's hal_plugin_api_t whose entries are validating trampolines instead of the plugin's
// own; without it the plugin's table is used as it is, so the layer costs nothing when off.
//
// Each trampoline checks the call against the ABI's headers before it reaches the plugin, and the result
// after:
//  - arguments: device indices in range, NULL output pointers, sizes of 0 where the ABI wants > 0, sizes
//    that overflow (ptr + size, count * element size); every device pointer (copies, memset, mappings,
//    collectives, op_launch tensors, kernel buffer arguments) must lie, with its whole extent, inside one
//    live allocation of the right device: a pointer into freed memory is a use after free, a free of a
//    freed pointer a double free, an extent past the end out of bounds; memory_free of a mapped
//    allocation; streams, events, communicators, programs and kernels must be live (never destroyed),
//    a stream of the right device (copies, collectives, kernel launches);
//  - results that contradict the ABI: a status outside hal_status_e, HAL_STATUS_NOT_READY from an entry
//    other than the *_query ones and event_elapsed_time, memory_allocate succeeding with NULL, with a
//    pointer aligned to less than 256 bytes (memory.h) or one that overlaps a live allocation, a create
//    entry succeeding with NULL or with a handle that is already live, free > total memory, a negative
//    device count, an unterminated device name, op_list succeeding with NULL operators;
//  - leaks (report()): what is still live, with sizes and the call that made it.
// A call that fails an argument check does not reach the plugin (so the process does not crash on it): it
// returns HAL_STATUS_INVALID_ARGUMENT; a result that contradicts the ABI becomes HAL_STATUS_INTERNAL. The
// layer's get_last_error then returns its message, so Plugin::check raises it like any plugin error:
//   HAL validation: memory_free(device=0, ptr=0x7f3a2c000000): ptr was already freed by memory_free at
//   call #41 (double free; 4096 bytes allocated by memory_allocate at call #40) [call #43 into plugin 'cpu']
// Every violation is also printed to stderr (the first 20 of each plugin; the rest are counted), since some
// callers (destructors) drop statuses; HAL_VALIDATE_LOG=<file> appends them (and the exit report) to a file
// as well, e.g. for test suites that capture the stderr of their child processes. HAL_VALIDATE=abort aborts
// the process at the first violation.
//
// What the layer cannot see: the runtime's caching allocator hands out blocks inside plugin allocations
// (segments), so a use after free of a cached block is caught by the runtime (hal::Allocation), not here;
// host pointers are not checked (pageable host memory is allowed everywhere).
//
// State: one slot per validated plugin (kSlots at most; beyond that a plugin loads unvalidated, with a
// warning), reached by trampolines generated per slot, since C function pointers carry no closure.
// Thread-safe: each slot's state has its own mutex.
#ifndef HAL_RUNTIME_VALIDATION_H_
#define HAL_RUNTIME_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "hal/hal.h"

namespace hal::validation {

// Whether HAL_VALIDATE asks for the layer ("1", "abort", or any value but "" and "0"); read once.
bool enabled();

// Fills |out| with a copy of |real| whose non-NULL entries are validating trampolines for |plugin| (its
// name, for messages), and returns the slot (>= 0). Returns -1 and copies |real| unchanged when every slot
// is taken.
int wrap(const hal_plugin_api_t& real, const std::string& plugin, hal_plugin_api_t* out);
// Frees |slot| once its plugin is shut down and unloaded (no call may come through its trampolines).
void release(int slot) noexcept;

// What the runtime itself holds of a plugin's memory, so that a report tells leaks from caches: the base
// pointers of the segments of every caching allocator over the plugin's devices. |complete| is false when
// some allocator could not be inspected (busy at exit): its device's allocations are then not called leaks.
struct Held {
  std::vector<const void*> segments;
  std::vector<int32_t> uninspected_devices;
};

struct Report {
  std::string plugin;
  uint64_t calls = 0;       // Calls into the plugin so far (get_last_error not counted).
  uint64_t violations = 0;  // Violations so far.
  std::string first_violation;  // Its message; empty when none.
  // Live allocations the runtime does not hold (not segments of its caching allocators), one line each:
  //   "memory_allocate(device=0, size_bytes=4096) -> 0x7f.. at call #7, never freed"
  std::vector<std::string> leaks;
  uint64_t leaked_bytes = 0;
  // Everything else still live, as "3 streams", "2 events", "2 segments of the caching allocator (4.00 MiB)",
  // ...: held by the runtime or by objects still alive (not leaks by themselves).
  std::vector<std::string> live;
};
// The report of |slot| now. Thread-safe.
Report report(int slot, const Held& held);
// The report as the lines printed at exit: a summary line, then one line per leak.
std::string format(const Report& report);
// Prints format(|report|) to stderr (and HAL_VALIDATE_LOG).
void print(const Report& report);

}  // namespace hal::validation

#endif  // HAL_RUNTIME_VALIDATION_H_
