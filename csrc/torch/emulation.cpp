// Emulated speed of the fallback's kernels (emulation.h).
#include "emulation.h"

#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <ctime>
#include <thread>

namespace hal::bridge {
namespace {

using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();
using SetLocalThreadsFn = int (*)(int);

struct ThreadControls {
  SetThreadsFn omp_set = nullptr;         // omp_set_num_threads: this thread's nthreads-var.
  GetThreadsFn omp_get = nullptr;         // omp_get_max_threads
  SetLocalThreadsFn mkl_local = nullptr;  // mkl_set_num_threads_local: returns the previous local setting.
};

// The OpenMP and MKL torch itself uses (resolved in this module's scope, which holds torch's libraries); absent
// in a build without them, and then there are no intra-op threads of theirs to turn off.
const ThreadControls& thread_controls() {
  static const ThreadControls controls = [] {
    ThreadControls c;
    c.omp_set = reinterpret_cast<SetThreadsFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    c.omp_get = reinterpret_cast<GetThreadsFn>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    // MKL's C entry (mkl.h maps mkl_set_num_threads_local to it); the lower-case symbol takes an int*.
    c.mkl_local = reinterpret_cast<SetLocalThreadsFn>(dlsym(RTLD_DEFAULT, "MKL_Set_Num_Threads_Local"));
    if (c.omp_get == nullptr) c.omp_set = nullptr;  // Both or neither: the previous value is restored.
    return c;
  }();
  return controls;
}

std::chrono::nanoseconds thread_cpu_time() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

}  // namespace

EmulatedSpeed::EmulatedSpeed(double speed) : speed_(speed), paced_(speed > 0 && speed < 1), running_(paced_) {
  if (!paced_) return;
  const ThreadControls& c = thread_controls();
  at::internal::lazy_init_num_threads();  // First, or torch's lazy per-thread init would undo the 1 below.
  if (c.omp_set) {
    omp_prev_ = c.omp_get();
    c.omp_set(1);
  }
  if (c.mkl_local) mkl_prev_ = c.mkl_local(1);
  start_ = std::chrono::steady_clock::now();
  cpu_start_ = thread_cpu_time();  // A system call: only paced kernels read it.
}

EmulatedSpeed::~EmulatedSpeed() { kernel_done(); }

void EmulatedSpeed::kernel_done() {
  if (!running_) return;
  running_ = false;
  const auto cpu = thread_cpu_time() - cpu_start_;
  const auto wall = std::chrono::steady_clock::now() - start_;
  const ThreadControls& c = thread_controls();
  if (c.omp_set) c.omp_set(omp_prev_);
  if (c.mkl_local) c.mkl_local(mkl_prev_);
  owed_ = std::chrono::duration_cast<std::chrono::nanoseconds>(cpu / speed_ - wall);
}

void EmulatedSpeed::pace() {
  thread_local std::chrono::nanoseconds overslept{0};
  kernel_done();
  const auto owed = owed_;
  owed_ = std::chrono::nanoseconds::zero();
  if (owed <= std::chrono::nanoseconds::zero()) return;
  if (owed <= overslept) {
    overslept -= owed;
    return;
  }
  const auto want = owed - overslept;
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(want);
  overslept = std::chrono::steady_clock::now() - start - want;
}

}  // namespace hal::bridge
