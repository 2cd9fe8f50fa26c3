// Runtime access: how the bridge reaches the process-wide hal::Runtime, its devices, and the calling thread's
// current device; fork safety; turning hal::Error into c10::Error.
//
// The bridge shares the runtime with hal._C. When torch touches a device before anything initialized the
// runtime, the bridge initializes it with the options Python registered (set_default_runtime_options: the
// package's plugin folder, environment honoured).
//
// Index mapping: torch index N is HAL global device index N (hal.devices()[N]).
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <exception>

#include "runtime/device.h"
#include "runtime/registry.h"

namespace hal::bridge {

constexpr c10::DeviceType kHal = c10::DeviceType::PrivateUse1;
constexpr int kMaxDevices = 128;  // c10::DeviceIndex is int8_t.

// Registers |hook| to run once, with the runtime, the first time the bridge reaches it (whoever started it),
// before that first use proceeds. For static initializers of this library: returns true. A hook must not call
// back into the bridge's device functions (it gets the runtime instead).
bool on_runtime_ready(void (*hook)(Runtime& runtime));

// Options used when the bridge must initialize the runtime itself.
void set_default_runtime_options(const RuntimeOptions& options);
// Devices visible to torch; initializes the runtime on first use. Never throws: 0 on any error.
int device_count() noexcept;
// The device behind torch index |index| (-1: the current device). Throws c10::Error for a bad index (naming
// the plugins that failed to load, when there are fewer devices than asked), in a forked child, or when the
// runtime cannot start.
Device& device(c10::DeviceIndex index);
// "hal:1 (emu:0)": how errors name a device. Never throws.
std::string describe(c10::DeviceIndex index);

// Fork safety: a child forked after the runtime started cannot use the parent's devices (plugin threads and
// device state do not survive fork). One pthread_atfork handler marks such a child.
// Throws c10::Error when this process is such a child.
void check_not_forked();
bool in_bad_fork() noexcept;

// The calling thread's current device (0 unless set).
c10::DeviceIndex current_device() noexcept;
// Validates |index| and makes it the calling thread's current device.
void set_current_device(c10::DeviceIndex index);
// Makes |index| current unless it is negative or already current; returns the previous current device. The
// one implementation behind the device guard, the hooks and hal._torch_C._exchange_device.
c10::DeviceIndex exchange_device(c10::DeviceIndex index);
// Sets the current device without validation (DeviceGuardImplInterface::uncheckedSetDevice).
void unchecked_set_current_device(c10::DeviceIndex index) noexcept;

// Whether the host can read and write the device's memory (host-addressable, or mappable).
bool host_reachable(const Device& dev);

// Rethrows |e| as c10::Error with |what| prefixed; an out-of-memory hal::Error becomes c10::OutOfMemoryError
// (torch.OutOfMemoryError) with the runtime's message (bytes requested, in use, cached, capacity) unchanged.
[[noreturn]] void rethrow_as_c10(const char* what, const std::exception& e);

// Runs |fn|, turning any exception but a c10::Error into one (rethrow_as_c10).
template <typename Fn>
auto translate(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& e) {
    rethrow_as_c10(what, e);
  }
}

}  // namespace hal::bridge
