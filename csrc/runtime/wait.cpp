#include "runtime/wait.h"

#include <algorithm>
#include <thread>

namespace hal {

bool wait_until(const std::function<bool()>& done, const StopPredicate& should_stop) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto next_check = start + kStopCheckInterval;
  std::chrono::microseconds pause{10};
  for (;;) {
    if (done()) return true;
    const auto now = clock::now();
    if (should_stop && now >= next_check) {
      if (should_stop()) return false;
      next_check = now + kStopCheckInterval;
    }
    if (now - start < kWaitSpin) {
      std::this_thread::yield();  // Lets the plugin's worker run if it shares this core.
      continue;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, kWaitMaxPause);
  }
}

}  // namespace hal
