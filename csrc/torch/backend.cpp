// Runtime access, fork safety, device guard, allocators, generators and hooks of the torch bridge.
// See bridge.h for the contracts.
#include "bridge.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace hal::bridge {
namespace {

constexpr c10::DeviceType kHal = c10::DeviceType::PrivateUse1;
constexpr int kMaxDevices = 128;    // c10::DeviceIndex is int8_t.
constexpr size_t kStreamPoolSize = 8;  // Streams handed out round robin by getNewStream.

std::mutex g_init_mutex;
RuntimeOptions g_default_options;
bool g_have_default_options = false;
std::atomic<bool> g_bad_fork{false};
std::once_flag g_atfork_once;

void on_fork_child() { g_bad_fork.store(true); }

Runtime& runtime() {
  check_not_forked();
  if (Runtime* rt = Runtime::instance()) return *rt;
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (Runtime* rt = Runtime::instance()) return *rt;
  TORCH_CHECK(g_have_default_options,
              "hal: the HAL runtime is not initialized; import hal.torch (or call hal.init()) first");
  Runtime& rt = translate("initializing the runtime", [] { return std::ref(Runtime::init(g_default_options)); });
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, on_fork_child); });
  return rt;
}

// Per thread: the current device. The current stream per device is the runtime's (Device::current_stream),
// shared with hal._C, so torch.hal and the hal Python API agree on it.
thread_local c10::DeviceIndex tls_device = 0;

}  // namespace

void set_default_runtime_options(const RuntimeOptions& options) {
  std::lock_guard<std::mutex> lock(g_init_mutex);
  g_default_options = options;
  g_have_default_options = true;
  // The runtime may have been started by hal._C: fork safety must cover that case too.
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, on_fork_child); });
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
  TORCH_CHECK(index < rt.device_count() && index < kMaxDevices, "hal: invalid device index ", int(index),
              ": there are ", rt.device_count(), " HAL devices (hal:0 .. hal:", rt.device_count() - 1, ")");
  return *rt.devices()[index];
}

bool host_reachable(const Device& dev) {
  const auto& p = dev.properties();
  return p.host_addressable || (p.mappable && dev.supports("memory_map") && dev.supports("memory_unmap"));
}

// --- Current device and streams -----------------------------------------------------------------------

c10::DeviceIndex current_device() { return tls_device; }

void set_current_device(c10::DeviceIndex index) {
  device(index);  // Validates.
  tls_device = index;
}

Stream current_stream(c10::DeviceIndex index) {
  Device& dev = device(index);
  return translate("current stream", [&] { return dev.current_stream(); });
}

Stream default_stream(c10::DeviceIndex index) {
  Device& dev = device(index);
  return translate("default stream", [&] { return dev.default_stream(); });
}

Stream exchange_stream(const Stream& stream) {
  return translate("setting the current stream", [&] { return stream.device().exchange_current_stream(stream); });
}

Stream stream_of(c10::DeviceIndex index, int64_t id) {
  Device& dev = device(index);
  return translate("stream", [&] { return id == 0 ? dev.default_stream() : dev.stream(id); });
}

c10::Stream to_c10(const Stream& stream) {
  return c10::Stream(c10::Stream::UNSAFE, c10::Device(kHal, static_cast<c10::DeviceIndex>(stream.device().index())),
                     stream.id());
}

Stream from_c10(const c10::Stream& stream) {
  TORCH_CHECK(stream.device_type() == kHal, "hal: expected a hal stream, got one of ", stream.device());
  return stream_of(stream.device_index(), stream.id());
}

namespace {

Stream pooled_stream(c10::DeviceIndex index) {
  static std::mutex mutex;
  static std::unordered_map<int, std::vector<int64_t>> pools;
  static std::unordered_map<int, size_t> next;
  Device& dev = device(index);
  std::lock_guard<std::mutex> lock(mutex);
  auto& pool = pools[dev.index()];
  size_t slot = next[dev.index()]++ % kStreamPoolSize;
  if (slot >= pool.size()) {
    pool.push_back(translate("creating a stream", [&] { return dev.create_stream().id(); }));
    slot = pool.size() - 1;
  }
  return dev.stream(pool[slot]);
}

// --- Device guard -------------------------------------------------------------------------------------

struct GuardImpl final : public c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kHal; }

  c10::Device exchangeDevice(c10::Device d) const override {
    c10::Device old = getDevice();
    if (d.index() != old.index()) setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return c10::Device(kHal, tls_device); }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kHal, "hal: expected a hal device, got ", d);
    if (d.index() >= 0) set_current_device(d.index());
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0) tls_device = d.index();
  }

  c10::Stream getStream(c10::Device d) const override { return to_c10(current_stream(d.index())); }
  c10::Stream getDefaultStream(c10::Device d) const override { return to_c10(default_stream(d.index())); }
  c10::Stream getStreamFromGlobalPool(c10::Device d, bool /*high priority*/) const override {
    return to_c10(pooled_stream(d.index()));
  }
  c10::Stream getNewStream(c10::Device d, int /*priority*/) const override { return to_c10(pooled_stream(d.index())); }
  c10::Stream exchangeStream(c10::Stream s) const override { return to_c10(exchange_stream(from_c10(s))); }

  void destroyEvent(void* event, const c10::DeviceIndex) const noexcept override {
    delete static_cast<Event*>(event);
  }
  void record(void** event, const c10::Stream& stream, const c10::DeviceIndex device_index,
              const c10::EventFlag flag) const override {
    TORCH_CHECK(device_index == -1 || device_index == stream.device_index(), "hal: event on hal:",
                int(device_index), " cannot record a stream of hal:", int(stream.device_index()));
    Stream s = from_c10(stream);
    translate("recording an event", [&] {
      auto* e = static_cast<Event*>(*event);
      if (e == nullptr) {
        e = new Event(s.device(), flag == c10::EventFlag::BACKEND_DEFAULT);
        *event = e;
      }
      e->record(s);
    });
  }
  void block(void* event, const c10::Stream& stream) const override {
    if (event == nullptr) return;
    auto* e = static_cast<Event*>(event);
    Stream s = from_c10(stream);
    translate("waiting for an event", [&] {
      if (&e->device().plugin() == &s.device().plugin()) {
        s.wait_event(*e);
      } else {
        e->synchronize();  // Plugins cannot wait on each other's events: order through the host.
      }
    });
  }
  bool queryEvent(void* event) const override {
    if (event == nullptr) return true;
    return translate("querying an event", [&] { return static_cast<Event*>(event)->query(); });
  }
  void synchronizeEvent(void* event) const override {
    if (event == nullptr) return;
    translate("synchronizing an event", [&] { static_cast<Event*>(event)->synchronize(); });
  }
  double elapsedTime(void* start, void* end, const c10::DeviceIndex) const override {
    TORCH_CHECK(start && end, "hal: both events must be recorded before elapsed_time");
    return translate("elapsed time",
                     [&] { return double(static_cast<Event*>(start)->elapsed_ms(*static_cast<Event*>(end))); });
  }

  c10::DeviceIndex deviceCount() const noexcept override { return static_cast<c10::DeviceIndex>(device_count()); }

  bool queryStream(const c10::Stream& stream) const override {
    return translate("querying a stream", [&] { return from_c10(stream).query(); });
  }
  void synchronizeStream(const c10::Stream& stream) const override {
    translate("synchronizing a stream", [&] { from_c10(stream).synchronize(); });
  }
  void synchronizeDevice(const c10::DeviceIndex index) const override {
    translate("synchronizing a device", [&] { device(index).synchronize(); });
  }
  void recordDataPtrOnStream(const c10::DataPtr& data, const c10::Stream& stream) const override {
    if (data.get_context() == nullptr) return;
    Stream s = from_c10(stream);
    translate("record_stream", [&] { s.device().allocator().record_stream(data.get_context(), s); });
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, GuardImpl);

// --- Device allocator -----------------------------------------------------------------------------------

void free_on_device(int index, void* ptr) noexcept {
  if (g_bad_fork.load(std::memory_order_relaxed)) return;  // The child must not touch the parent's device state.
  Runtime* rt = Runtime::instance();
  if (rt == nullptr || index >= rt->device_count()) return;  // After shutdown memory is already released.
  try {
    rt->devices()[index]->allocator().free(ptr);
  } catch (...) {
  }
}

// One deleter per device index, so a DataPtr needs no heap context: its context is the allocation itself.
template <size_t... I>
constexpr std::array<c10::DeleterFnPtr, sizeof...(I)> make_deleters(std::index_sequence<I...>) {
  return {{+[](void* p) { free_on_device(static_cast<int>(I), p); }...}};
}
constexpr auto kDeleters = make_deleters(std::make_index_sequence<kMaxDevices>{});

// HAL's allocator statistics in torch.cuda's layout (the "all" aggregate; HAL keeps no per-pool split, so the
// small_pool / large_pool entries stay 0). The runtime counts rounded block sizes, so requested_bytes equals
// allocated_bytes; active_bytes counts live blocks only (blocks freed but still waiting on another stream's
// events are not counted). Counts (allocation, segment) keep no peak of their own: their peak is the current
// value. Byte totals (".allocated" / ".freed" of the byte stats) are not kept and stay 0.
c10::CachingDeviceAllocator::DeviceStats to_torch_stats(const AllocatorStats& s) {
  using c10::CachingAllocator::Stat;
  using c10::CachingAllocator::StatArray;
  using c10::CachingAllocator::StatType;
  c10::CachingDeviceAllocator::DeviceStats out;
  auto set = [](StatArray& a, int64_t current, int64_t peak, int64_t allocated, int64_t freed) {
    Stat& all = a[static_cast<size_t>(StatType::AGGREGATE)];
    all.current = current;
    all.peak = std::max(peak, current);
    all.allocated = allocated;
    all.freed = freed;
  };
  set(out.allocated_bytes, s.allocated_bytes, s.allocated_bytes_peak, 0, 0);
  set(out.active_bytes, s.allocated_bytes, s.allocated_bytes_peak, 0, 0);
  set(out.requested_bytes, s.allocated_bytes, s.allocated_bytes_peak, 0, 0);
  set(out.reserved_bytes, s.reserved_bytes, s.reserved_bytes_peak, 0, 0);
  set(out.allocation, s.allocated_blocks, 0, s.num_allocs, s.num_frees);
  set(out.segment, s.segments, 0, s.num_raw_allocs, s.num_raw_frees);
  set(out.active, s.active_blocks, 0, s.num_allocs, s.num_frees);
  out.num_alloc_retries = s.num_alloc_retries;
  out.num_ooms = s.num_ooms;
  out.num_device_alloc = s.num_raw_allocs;
  out.num_device_free = s.num_raw_frees;
  return out;
}

}  // namespace

// The hot path of every hal tensor: one runtime lock (the allocator's), no strings, no heap context.
c10::DataPtr allocate_on(c10::DeviceIndex index, size_t nbytes) {
  Device& dev = device(index);
  index = static_cast<c10::DeviceIndex>(dev.index());
  void* ptr = translate("allocating device memory",
                        [&] { return dev.allocator().allocate(nbytes, dev.current_stream()); });
  return {ptr, ptr, kDeleters[index], c10::Device(kHal, index)};
}

namespace {

struct DeviceAllocatorImpl final : public c10::DeviceAllocator {
  c10::DataPtr allocate(size_t nbytes) override { return allocate_on(tls_device, nbytes); }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    Stream stream = current_stream(tls_device);
    translate("copying device memory", [&] {
      stream.copy_d2d(dest, src, count);
      stream.synchronize();
    });
  }

  bool initialized() override { return Runtime::instance() != nullptr; }
  void emptyCache(c10::MempoolId_t) override {
    Runtime* rt = Runtime::instance();
    if (rt == nullptr || g_bad_fork.load()) return;
    translate("empty_cache", [&] {
      for (Device* d : rt->devices()) d->allocator().empty_cache();
    });
  }
  void recordStream(const c10::DataPtr& ptr, c10::Stream stream) override {
    if (ptr.get_context() == nullptr) return;
    Stream s = from_c10(stream);
    translate("record_stream", [&] { s.device().allocator().record_stream(ptr.get_context(), s); });
  }
  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(c10::DeviceIndex index) override {
    return to_torch_stats(device(index).allocator().stats());
  }
  void resetAccumulatedStats(c10::DeviceIndex index) override {
    device(index).allocator().reset_accumulated_stats();
  }
  void resetPeakStats(c10::DeviceIndex index) override { device(index).allocator().reset_peak_stats(); }
  std::pair<size_t, size_t> getMemoryInfo(c10::DeviceIndex index) override {
    auto info = translate("memory info", [&] { return device(index).memory_info(); });
    return {static_cast<size_t>(info.first), static_cast<size_t>(info.second)};
  }
};

DeviceAllocatorImpl g_device_allocator;

// --- Pinned host allocator --------------------------------------------------------------------------------

std::mutex g_pinned_mutex;
std::map<uintptr_t, size_t> g_pinned;  // base -> size, for is_pinned.

struct PinnedContext {
  Plugin* plugin;  // nullptr: plain memory from std::aligned_alloc.
  void* ptr;
};

void free_pinned(void* ctx) {
  auto* c = static_cast<PinnedContext*>(ctx);
  {
    std::lock_guard<std::mutex> lock(g_pinned_mutex);
    g_pinned.erase(reinterpret_cast<uintptr_t>(c->ptr));
  }
  if (c->plugin == nullptr) {
    std::free(c->ptr);
  } else if (!g_bad_fork.load()) {
    try {
      c->plugin->api().host_free(c->ptr);
    } catch (...) {  // The plugin was shut down: its memory went with it.
    }
  }
  delete c;
}

struct PinnedAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes == 0) return {nullptr, nullptr, &free_pinned_null, c10::Device(c10::kCPU)};
    Plugin* plugin = nullptr;
    if (device_count() > 0) {
      Device& dev = device(tls_device);
      if (dev.supports("host_allocate") && dev.supports("host_free")) plugin = &dev.plugin();
    }
    void* ptr = nullptr;
    if (plugin != nullptr) {
      translate("allocating pinned memory", [&] {
        plugin->check(plugin->api().host_allocate(nbytes, &ptr), "host_allocate");
      });
    } else {
      ptr = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
      TORCH_CHECK(ptr != nullptr, "hal: out of host memory allocating ", nbytes, " pinned bytes");
    }
    {
      std::lock_guard<std::mutex> lock(g_pinned_mutex);
      g_pinned[reinterpret_cast<uintptr_t>(ptr)] = nbytes;
    }
    return {ptr, new PinnedContext{plugin, ptr}, &free_pinned, c10::Device(c10::kCPU)};
  }
  static void free_pinned_null(void*) {}
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

PinnedAllocator g_pinned_allocator;

// --- Generators -------------------------------------------------------------------------------------------

// A device generator whose state lives in a CPU generator: the fallback hands that CPU generator to CPU
// kernels, so the device's random stream advances exactly as a CPU generator with the same seed would.
class GeneratorImpl final : public c10::GeneratorImpl {
 public:
  GeneratorImpl(c10::DeviceIndex index, at::Generator cpu)
      : c10::GeneratorImpl(c10::Device(kHal, index), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1)),
        cpu_(std::move(cpu)) {}

  const at::Generator& cpu() const { return cpu_; }

  void set_current_seed(uint64_t seed) override { impl()->set_current_seed(seed); }
  void set_offset(uint64_t offset) override { impl()->set_offset(offset); }
  uint64_t get_offset() const override { return impl()->get_offset(); }
  uint64_t current_seed() const override { return impl()->current_seed(); }
  uint64_t seed() override { return impl()->seed(); }
  void set_state(const c10::TensorImpl& state) override { impl()->set_state(state); }
  c10::intrusive_ptr<c10::TensorImpl> get_state() const override { return impl()->get_state(); }

 private:
  c10::GeneratorImpl* impl() const { return cpu_.unsafeGetGeneratorImpl(); }
  GeneratorImpl* clone_impl() const override { return new GeneratorImpl(device_.index(), cpu_.clone()); }

  at::Generator cpu_;
};

std::once_flag g_generators_once;
std::vector<at::Generator> g_default_generators;

}  // namespace

c10::DeviceAllocator* device_allocator() { return &g_device_allocator; }
c10::Allocator* pinned_allocator() { return &g_pinned_allocator; }

c10::Device device_of_ptr(const void* ptr) {
  Runtime& rt = runtime();
  for (Device* d : rt.devices()) {  // Exact starts first (O(1) each), then interior pointers.
    if (d->index() < kMaxDevices && d->allocator().allocation_size(const_cast<void*>(ptr)) > 0) {
      return c10::Device(kHal, static_cast<c10::DeviceIndex>(d->index()));
    }
  }
  for (Device* d : rt.devices()) {
    if (d->index() < kMaxDevices && d->allocator().find_allocation(ptr).first != nullptr) {
      return c10::Device(kHal, static_cast<c10::DeviceIndex>(d->index()));
    }
  }
  TORCH_CHECK(false, "hal: ", ptr, " is not inside a live allocation of any HAL device");
}

bool is_pinned(const void* ptr) {
  auto p = reinterpret_cast<uintptr_t>(ptr);
  std::lock_guard<std::mutex> lock(g_pinned_mutex);
  auto it = g_pinned.upper_bound(p);
  if (it == g_pinned.begin()) return false;
  --it;
  return p < it->first + it->second;
}

void resize_storage_bytes(c10::StorageImpl* storage, size_t nbytes) {
  TORCH_CHECK(storage->resizable(), "hal: trying to resize storage that is not resizable");
  c10::DeviceIndex index = storage->device().index();
  c10::DeviceGuard guard(storage->device());
  c10::DataPtr fresh = g_device_allocator.allocate(nbytes);
  size_t keep = std::min(nbytes, storage->nbytes());
  if (keep > 0 && storage->data() != nullptr) {
    Stream stream = current_stream(index);
    translate("resizing storage", [&] { stream.copy_d2d(fresh.get(), storage->data(), keep); });
  }
  storage->set_data_ptr_noswap(std::move(fresh));  // The old block is freed in stream order.
  storage->set_nbytes(nbytes);
}

HostView::HostView(Device& dev, void* device_ptr, size_t nbytes) : dev_(&dev), nbytes_(nbytes) {
  if (dev.properties().host_addressable || device_ptr == nullptr || nbytes == 0) {
    host_ = device_ptr;
    return;
  }
  TORCH_CHECK(host_reachable(dev), "hal: device ", dev.name(), " has no host mapping");
  translate("mapping device memory", [&] {
    Plugin& p = dev.plugin();
    p.check(p.api().memory_map(dev.local_index(), device_ptr, nbytes, &host_), "memory_map", dev.name());
  });
  mapped_ = true;
}

HostView::HostView(HostView&& other) noexcept
    : dev_(other.dev_), host_(other.host_), nbytes_(other.nbytes_), mapped_(other.mapped_) {
  other.mapped_ = false;
}

HostView::~HostView() {
  if (!mapped_) return;
  try {
    dev_->plugin().api().memory_unmap(dev_->local_index(), host_, nbytes_);
  } catch (...) {
  }
}

const at::Generator& default_generator(c10::DeviceIndex index) {
  int count = device_count();
  std::call_once(g_generators_once, [&] {
    g_default_generators.reserve(count);
    for (int i = 0; i < count; ++i) {
      g_default_generators.push_back(at::make_generator<GeneratorImpl>(
          static_cast<c10::DeviceIndex>(i), at::make_generator<at::CPUGeneratorImpl>(c10::detail::getNonDeterministicRandom())));
    }
  });
  if (index < 0) index = tls_device;
  TORCH_CHECK(index < static_cast<int>(g_default_generators.size()), "hal: invalid device index ", int(index),
              " for a generator (", g_default_generators.size(), " devices)");
  return g_default_generators[index];
}

at::Generator new_generator(c10::DeviceIndex index) {
  if (index < 0) index = tls_device;
  device(index);  // Validates.
  return at::make_generator<GeneratorImpl>(index, at::make_generator<at::CPUGeneratorImpl>());
}

at::Generator cpu_generator_of(const at::Generator& gen) {
  TORCH_CHECK(gen.device().type() == kHal, "hal: expected a hal generator, got one for ", gen.device());
  return static_cast<GeneratorImpl*>(gen.unsafeGetGeneratorImpl())->cpu();
}

// --- Hooks -----------------------------------------------------------------------------------------------

namespace {

struct Hooks final : public at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return device_count() > 0; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return Runtime::instance() != nullptr; }
  void init() const override { device_count(); }
  c10::DeviceIndex deviceCount() const override { return static_cast<c10::DeviceIndex>(device_count()); }
  void setCurrentDevice(c10::DeviceIndex index) const override { set_current_device(index); }
  c10::DeviceIndex getCurrentDevice() const override { return tls_device; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex index) const override {
    c10::DeviceIndex old = tls_device;
    if (index >= 0 && index != old) set_current_device(index);
    return old;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex index) const override {
    if (index < 0 || index >= device_count()) return tls_device;
    return exchangeDevice(index);
  }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex index) const override {
    return default_generator(index);
  }
  at::Generator getNewGenerator(c10::DeviceIndex index) const override { return new_generator(index); }
  at::Device getDeviceFromPtr(void* data) const override { return device_of_ptr(data); }
  bool isPinnedPtr(const void* data) const override { return is_pinned(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return pinned_allocator(); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t nbytes) const override {
    resize_storage_bytes(storage.unsafeGetStorageImpl(), nbytes);
  }
};

}  // namespace

void register_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::RegisterPrivateUse1HooksInterface(new Hooks());  // Leaked on purpose: torch keeps the pointer.
    c10::SetAllocator(kHal, &g_device_allocator);
  });
}

}  // namespace hal::bridge
