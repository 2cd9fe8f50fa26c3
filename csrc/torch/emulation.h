// Emulated speed: kernels the fallback runs for an emulated device of relative speed s < 1 take c / s, where c
// is the CPU time the host spent on the kernel (CLOCK_THREAD_CPUTIME_ID of the thread that ran it). After the
// kernel the fallback sleeps max(0, c / s - wall), wall being the kernel's elapsed time.
//
// Why CPU time rather than wall time: when emulated devices share a few host cores with each other and with
// other processes, time a kernel spent waiting for a core is not work, so it is absorbed into the device's own
// slowness (the sleep shrinks) instead of being multiplied by 1/s. As long as the emulated devices' total
// demand (the sum of their speeds, in cores) fits the host, every device keeps its emulated speed.
//
// Thread CPU time counts only the calling thread, so a paced kernel must not hand work to torch's intra-op
// threads: it runs single-threaded, and a paced device of speed s is s of ONE host core. at::set_num_threads
// is no tool for one op (process-wide, and it rebuilds thread pools); OpenMP's nthreads-var and MKL's local
// thread count are per-thread settings, so they are set to 1 around the kernel and restored. Devices at speed 1
// are not paced and run kernels exactly as the CPU would, intra-op threads included.
#pragma once

#include <chrono>

namespace hal::bridge {

// Runs the scope's kernel as a device of relative speed |speed| would: construct it right before the kernel,
// call kernel_done() right after it, and pace() once the results are in place. A no-op at speed >= 1.
class EmulatedSpeed {
 public:
  explicit EmulatedSpeed(double speed);
  ~EmulatedSpeed();
  EmulatedSpeed(const EmulatedSpeed&) = delete;
  EmulatedSpeed& operator=(const EmulatedSpeed&) = delete;

  // Stops the clocks and gives the thread its intra-op threads back (the destructor does too, when the kernel
  // threw).
  void kernel_done();
  // Sleeps what the device still owes. A sleep overshoots by the timer slack and the wake-up (~50-100 us,
  // more than many small kernels take), so each thread carries what it overslept into its next sleeps: over a
  // run of ops the device's time is cpu / s, not cpu / s plus a wake-up per op.
  void pace();

 private:
  const double speed_;
  const bool paced_;
  bool running_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::nanoseconds cpu_start_{0};
  std::chrono::nanoseconds owed_{0};
  int omp_prev_ = 1;  // The thread's OpenMP and MKL settings before the kernel.
  int mkl_prev_ = 0;  // 0: no local setting, MKL's global one applies.
};

}  // namespace hal::bridge
