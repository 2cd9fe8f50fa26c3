// Runtime access, the current device and fork safety of the torch bridge (runtime_access.h).
#include "runtime_access.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace hal::bridge {
namespace {

std::mutex g_init_mutex;
RuntimeOptions g_default_options;
bool g_have_default_options = false;
std::atomic<bool> g_bad_fork{false};

// Per thread: the current device. The current stream per device is the runtime's (Device::current_stream),
// shared with hal._C, so torch.hal and the hal Python API agree on it.
thread_local c10::DeviceIndex tls_device = 0;

// The child of a fork is "bad" only when the parent had started the runtime (through the bridge or hal._C):
// a child forked before any device use starts its own runtime.
void on_fork_child() {
  if (Runtime::instance() != nullptr) g_bad_fork.store(true);
}

void register_fork_handler() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, on_fork_child); });
}

std::vector<void (*)(Runtime&)>& ready_hooks() {
  static std::vector<void (*)(Runtime&)> hooks;
  return hooks;
}
std::once_flag g_ready_once;

Runtime& started_runtime() {
  if (Runtime* rt = Runtime::instance()) return *rt;
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (Runtime* rt = Runtime::instance()) return *rt;
  TORCH_CHECK(g_have_default_options,
              "hal: the HAL runtime is not initialized; import hal.torch (or call hal.init()) first");
  return translate("initializing the runtime", [] { return std::ref(Runtime::init(g_default_options)); });
}

Runtime& runtime() {
  check_not_forked();
  Runtime& rt = started_runtime();
  std::call_once(g_ready_once, [&] {
    for (auto hook : ready_hooks()) hook(rt);
  });
  return rt;
}

// Why there are fewer devices than a caller asked for: the plugins that failed to load, if any.
std::string load_errors_of(const Runtime& rt) {
  if (rt.load_errors().empty()) return "";
  std::string out = "; plugins that failed to load:";
  for (const LoadError& e : rt.load_errors()) out += " [" + e.path + ": " + e.message + "]";
  return out;
}

}  // namespace

bool on_runtime_ready(void (*hook)(Runtime&)) {
  ready_hooks().push_back(hook);
  return true;
}

void set_default_runtime_options(const RuntimeOptions& options) {
  std::lock_guard<std::mutex> lock(g_init_mutex);
  g_default_options = options;
  g_have_default_options = true;
  // Registered here, before any device use, so it also covers a runtime started by hal._C.
  register_fork_handler();
}

bool in_bad_fork() noexcept { return g_bad_fork.load(); }

void check_not_forked() {
  TORCH_CHECK(!g_bad_fork.load(),
              "hal: cannot use HAL devices in a process forked after they were initialized (the plugins' "
              "threads and device state do not survive fork). Use the 'spawn' or 'forkserver' start method "
              "of multiprocessing, or initialize devices only in the child.");
}

int device_count() noexcept {
  if (g_bad_fork.load()) return 0;
  try {
    return std::min(runtime().device_count(), kMaxDevices);
  } catch (...) {
    return 0;
  }
}

Device& device(c10::DeviceIndex index) {
  Runtime& rt = runtime();
  if (index < 0) index = tls_device;
  const int count = std::min(rt.device_count(), kMaxDevices);
  TORCH_CHECK(index < count, "hal: invalid device index ", int(index), ": there are ", count,
              " HAL devices (hal:0 .. hal:", count - 1, ")", load_errors_of(rt));
  return *rt.devices()[index];
}

std::string describe(c10::DeviceIndex index) {
  std::string out = "hal:" + std::to_string(int(index));
  try {
    out += " (" + device(index).name() + ")";
  } catch (...) {
  }
  return out;
}

bool host_reachable(const Device& dev) {
  const auto& p = dev.properties();
  return p.host_addressable || (p.mappable && dev.supports("memory_map") && dev.supports("memory_unmap"));
}

c10::DeviceIndex current_device() noexcept { return tls_device; }

void set_current_device(c10::DeviceIndex index) {
  device(index);  // Validates.
  tls_device = index;
}

c10::DeviceIndex exchange_device(c10::DeviceIndex index) {
  const c10::DeviceIndex old = tls_device;
  if (index >= 0 && index != old) set_current_device(index);
  return old;
}

void unchecked_set_current_device(c10::DeviceIndex index) noexcept {
  if (index >= 0) tls_device = index;
}

void rethrow_as_c10(const char* what, const std::exception& e) {
  const auto* error = dynamic_cast<const Error*>(&e);
  TORCH_CHECK_WITH(OutOfMemoryError, error == nullptr || error->code() != HAL_STATUS_OUT_OF_MEMORY, "hal: ", what,
                   ": ", e.what());
  TORCH_CHECK(false, "hal: ", what, ": ", e.what());
}

}  // namespace hal::bridge
