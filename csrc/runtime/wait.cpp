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
#if defined(__x86_64__) || defined(__i386__)
      for (int i = 0; i < 32; ++i) __builtin_ia32_pause();  // Leaves the plugin's lock to its worker.
#endif
      continue;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, kWaitMaxPause);
  }
}

}  // namespace hal
