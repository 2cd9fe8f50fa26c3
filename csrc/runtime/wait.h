// hal::wait_until: the one interruptible wait of the runtime.
//
// Why: a plugin's blocking synchronize (stream_synchronize, event_synchronize) cannot be interrupted, so a
// caller that must react while it waits (Python's Ctrl-C, a deadline, a cancelled job) would hang until the
// work is over. Waits that can be stopped instead poll the plugin's non-blocking query: first spinning
// briefly, as a driver does (a short copy then costs no sleep and wake-up), then sleeping in growing pauses,
// and asking |should_stop| every kStopCheckInterval. Stream::synchronize, Event::synchronize and
// Device::synchronize take such a predicate (stream.h, device.h); the Python bindings pass one that runs the
// interpreter's signal handlers, and the torch bridge may pass its own.
#ifndef HAL_RUNTIME_WAIT_H_
#define HAL_RUNTIME_WAIT_H_

#include <chrono>
#include <functional>

namespace hal {

// Returns true to abandon a wait. Called on the waiting thread; may throw (the exception leaves the wait).
using StopPredicate = std::function<bool()>;

inline constexpr std::chrono::microseconds kWaitSpin{50};            // Polling without sleeping.
inline constexpr std::chrono::microseconds kWaitMaxPause{1000};      // The longest sleep between polls.
inline constexpr std::chrono::milliseconds kStopCheckInterval{5};    // How often should_stop is asked.

// Polls |done| until it returns true (returns true), or until |should_stop| returns true (returns false;
// the awaited work goes on). An empty |should_stop| never stops. Exceptions of either propagate.
bool wait_until(const std::function<bool()>& done, const StopPredicate& should_stop);

}  // namespace hal

#endif  // HAL_RUNTIME_WAIT_H_
