// The aten kernels of the `hal` backend: factories, copies, views, and the boxed fallback for every other op.
//
// Fallback. An op with no native kernel runs its CPU kernel:
//  - on host-reachable devices (host-addressable, or mappable through memory_map) IN PLACE: every hal
//    tensor argument becomes a CPU tensor aliasing the same memory, the device's current stream is
//    synchronized first (stream order), and only outputs the kernel newly created are copied to the device;
//    outputs that alias an argument come back as views of the original hal tensor;
//  - on other devices through at::native::cpu_fallback (arguments copied to host and results back).
// A generator argument (or its absence) is replaced by the hal device's generator's CPU state. Emulated
// devices with relative_speed s < 1 are paced (see "Emulated speed" below), so a slower chip is slower.
#include "bridge.h"

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/view_native.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace hal::bridge {
namespace {

constexpr c10::DispatchKeySet kHalKeys(c10::DispatchKey::PrivateUse1);

Device& hal_device(const at::Tensor& t) { return device(t.device().index()); }

void* storage_ptr(const at::Tensor& t) { return t.storage().unsafeGetStorageImpl()->mutable_data(); }

// Memory a CPU kernel gets when it grows a written argument (out= resized by resize_output): device memory
// of the fallback's device, seen through a host view, so the result needs no copy afterwards (the fallback
// moves the device allocation into the hal tensor's storage; see adopt_grown).
struct GrownContext {
  c10::DataPtr device_memory;
  HostView view;
};

void free_grown(void* ctx) { delete static_cast<GrownContext*>(ctx); }

thread_local c10::DeviceIndex tls_grow_device = -1;

struct GrowAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    TORCH_CHECK(tls_grow_device >= 0, "hal: internal error: alias grown outside a fallback");
    c10::DeviceGuard guard(c10::Device(c10::DeviceType::PrivateUse1, tls_grow_device));
    c10::DataPtr mem = device_allocator()->allocate(nbytes);
    HostView view(device(tls_grow_device), mem.get(), nbytes);
    void* host = view.host();
    return {host, new GrownContext{std::move(mem), std::move(view)}, &free_grown, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

GrowAllocator g_grow_allocator;

// When the kernel grew |alias| into device memory (GrowAllocator), moves that memory into |original|'s storage
// and returns true; false when the alias's memory is something else.
bool adopt_grown(const at::Tensor& original, const at::Tensor& alias) {
  c10::StorageImpl* alias_storage = alias.storage().unsafeGetStorageImpl();
  if (alias_storage->data_ptr().get_deleter() != &free_grown) return false;
  const size_t nbytes = alias_storage->nbytes();
  c10::DataPtr host = alias_storage->set_data_ptr(c10::DataPtr(nullptr, c10::Device(c10::kCPU)));
  std::unique_ptr<GrownContext> ctx(static_cast<GrownContext*>(host.release_context()));
  c10::StorageImpl* storage = original.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(std::move(ctx->device_memory));
  storage->set_nbytes(nbytes);
  return true;
}

// A CPU tensor over |host| (nbytes of host memory aliasing |t|'s whole storage) with |t|'s geometry. With
// |resizable| a CPU kernel may grow it (into device memory, see GrowAllocator; the caller adopts it).
at::Tensor alias_over(const at::Tensor& t, void* host, bool resizable) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), t.storage().nbytes(), c10::DataPtr(host, c10::Device(c10::kCPU)),
                       resizable ? &g_grow_allocator : nullptr, resizable);
  at::Tensor out = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                            t.dtype());
  out.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  return out;
}

at::Tensor host_alias(const at::Tensor& t, std::vector<HostView>& views, bool resizable = false) {
  views.emplace_back(hal_device(t), storage_ptr(t), t.storage().nbytes());
  return alias_over(t, views.back().host(), resizable);
}

// Elements [first, last) of the storage that |t| touches.
std::pair<int64_t, int64_t> storage_span(const at::Tensor& t) {
  int64_t last = t.storage_offset();
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {t.storage_offset(), last + 1};
}

// Sets sizes and strides (contiguous when |stride| is empty) and grows the storage when it is too small.
void restride(const at::Tensor& self, c10::IntArrayRef size, at::OptionalIntArrayRef stride) {
  c10::TensorImpl* impl = self.unsafeGetTensorImpl();
  at::native::resize_impl_cpu_(impl, size, stride, /*resize_storage=*/false);
  if (impl->numel() == 0) return;
  size_t needed = at::detail::computeStorageNbytes(impl->sizes(), impl->strides(), self.dtype().itemsize(),
                                                   impl->storage_offset());
  if (needed > impl->storage().nbytes()) resize_storage_bytes(impl->storage().unsafeGetStorageImpl(), needed);
}

// The values of hal tensor |src| as a new contiguous CPU tensor.
at::Tensor read_to_host(const at::Tensor& src) {
  Device& dev = hal_device(src);
  Stream stream = current_stream(src.device().index());
  if (host_reachable(dev)) {  // Read in place once the stream is done with it: one CPU copy, no staging.
    translate("synchronizing", [&] { stream.synchronize(); });
    std::vector<HostView> views;
    return host_alias(src, views).clone(at::MemoryFormat::Contiguous);
  }
  if (src.is_contiguous()) {
    at::Tensor host = at::empty(src.sizes(), src.options().device(c10::kCPU));
    translate("copying device to host", [&] {
      stream.copy_d2h(host.data_ptr(), src.const_data_ptr(), src.nbytes());
      stream.synchronize();
    });
    return host;
  }
  auto [first, last] = storage_span(src);
  const int64_t item = src.dtype().itemsize();
  at::Tensor span = at::empty({last - first}, src.options().device(c10::kCPU));
  translate("copying device to host", [&] {
    stream.copy_d2h(span.data_ptr(), static_cast<char*>(storage_ptr(src)) + first * item, (last - first) * item);
    stream.synchronize();
  });
  return span.as_strided(src.sizes(), src.strides(), 0).clone(at::MemoryFormat::Contiguous);
}

// Writes CPU tensor |host| (any dtype, broadcastable to dst) into hal tensor |dst|.
void write_from_host(const at::Tensor& dst, at::Tensor host, bool non_blocking) {
  Device& dev = hal_device(dst);
  Stream stream = current_stream(dst.device().index());
  const bool queued = non_blocking && dev.supports("launch_host_func");
  if (host_reachable(dev) && !(queued && dst.is_contiguous())) {  // In place once the stream is done with dst.
    translate("synchronizing", [&] { stream.synchronize(); });
    std::vector<HostView> views;
    host_alias(dst, views).copy_(host);
    return;
  }
  if (dst.is_contiguous()) {
    if (host.dtype() != dst.dtype()) host = host.to(dst.scalar_type());
    if (host.sizes() != dst.sizes()) host = host.expand(dst.sizes());
    host = host.contiguous();
    translate("copying host to device", [&] {
      stream.copy_h2d(dst.data_ptr(), host.const_data_ptr(), dst.nbytes());
      if (queued) {
        stream.launch_host_func([keep = std::move(host)]() mutable { keep.reset(); });  // Alive until copied.
      } else {
        stream.synchronize();
      }
    });
    return;
  }
  translate("synchronizing", [&] { stream.synchronize(); });
  // Read-modify-write of the span dst covers.
  auto [first, last] = storage_span(dst);
  const int64_t item = dst.dtype().itemsize();
  char* base = static_cast<char*>(storage_ptr(dst)) + first * item;
  at::Tensor span = at::empty({last - first}, dst.options().device(c10::kCPU));
  translate("copying device to host", [&] {
    stream.copy_d2h(span.data_ptr(), base, (last - first) * item);
    stream.synchronize();
  });
  span.as_strided(dst.sizes(), dst.strides(), 0).copy_(host);
  translate("copying host to device", [&] {
    stream.copy_h2d(base, span.const_data_ptr(), (last - first) * item);
    stream.synchronize();
  });
}

bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.dtype() == b.dtype() && a.sizes() == b.sizes() && a.is_contiguous() && b.is_contiguous();
}

// --- Factories and views ------------------------------------------------------------------------------

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device_opt,
                               std::optional<bool> pin_memory, std::optional<c10::MemoryFormat> memory_format) {
  const c10::Device dev = c10::device_or_default(device_opt);
  TORCH_CHECK(dev.is_privateuseone(), "hal: empty on ", dev);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "hal: only strided tensors are supported");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "hal: only CPU tensors can be pinned");
  check_not_forked();
  const c10::DeviceGuard guard(dev);
  return at::detail::empty_generic(size, device_allocator(), kHalKeys, c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device_opt,
                         std::optional<bool> pin_memory) {
  const c10::Device dev = c10::device_or_default(device_opt);
  TORCH_CHECK(dev.is_privateuseone(), "hal: empty_strided on ", dev);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "hal: only strided tensors are supported");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "hal: only CPU tensors can be pinned");
  check_not_forked();
  const c10::DeviceGuard guard(dev);
  return at::detail::empty_strided_generic(size, stride, device_allocator(), kHalKeys, c10::dtype_or_default(dtype));
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride,
                      std::optional<c10::SymInt> storage_offset) {
  std::optional<int64_t> offset;
  if (storage_offset) offset = storage_offset->guard_int(__FILE__, __LINE__);
  return at::native::as_strided_tensorimpl(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride), offset);
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride));
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  restride(self, C10_AS_INTARRAYREF_SLOW(size), std::nullopt);
  if (memory_format && *memory_format != c10::MemoryFormat::Preserve) {
    self.unsafeGetTensorImpl()->empty_tensor_restride(*memory_format);
  }
  return self;
}

at::Tensor& set_storage(at::Tensor& self, at::Storage source, int64_t offset, c10::IntArrayRef size,
                        c10::IntArrayRef stride) {
  at::native::checkSetStorage(self, source, offset, size, stride);
  self.unsafeGetTensorImpl()->set_storage_offset(offset);
  restride(self, size, stride.empty() ? at::OptionalIntArrayRef() : at::OptionalIntArrayRef(stride));
  return self;
}

at::Tensor& set_source_storage_offset(at::Tensor& self, at::Storage source, c10::SymInt offset,
                                      c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  return set_storage(self, std::move(source), offset.guard_int(__FILE__, __LINE__), C10_AS_INTARRAYREF_SLOW(size),
                     C10_AS_INTARRAYREF_SLOW(stride));
}

at::Tensor& set_source_storage(at::Tensor& self, at::Storage source) {
  const int64_t numel = static_cast<int64_t>(source.nbytes() / self.dtype().itemsize());
  return set_storage(self, std::move(source), 0, {numel}, {});
}

at::Tensor& set_source_tensor(at::Tensor& self, const at::Tensor& source) {
  if (self.is_same(source)) return self;
  return set_storage(self, source.storage(), source.storage_offset(), source.sizes(), source.strides());
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage empty(c10::Storage::use_byte_size_t(), 0, device_allocator()->allocate(0), device_allocator(), true);
  return set_storage(self, std::move(empty), 0, {0}, {});
}

// --- Copies ----------------------------------------------------------------------------------------------

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  TORCH_CHECK(self.defined() && dst.defined(), "hal: copy of an undefined tensor");
  if (dst.numel() == 0) return dst;
  check_not_forked();
  if (!self.is_privateuseone()) {  // host -> device
    TORCH_CHECK(self.is_cpu(), "hal: cannot copy from ", self.device(), " to ", dst.device());
    write_from_host(dst, self, non_blocking);
    return dst;
  }
  if (!dst.is_privateuseone()) {  // device -> host
    TORCH_CHECK(dst.is_cpu(), "hal: cannot copy from ", self.device(), " to ", dst.device());
    if (!non_blocking && host_reachable(hal_device(self))) {
      // Read in place once the stream is done with it: torch's CPU copy (threads, strides, dtype), as clone().
      Stream stream = current_stream(self.device().index());
      translate("synchronizing", [&] { stream.synchronize(); });
      std::vector<HostView> views;
      dst.copy_(host_alias(self, views));
    } else if (same_layout(self, dst)) {
      Stream stream = current_stream(self.device().index());
      translate("copying device to host", [&] {
        stream.copy_d2h(dst.data_ptr(), self.const_data_ptr(), dst.nbytes());
        if (!non_blocking) stream.synchronize();
      });
    } else {
      dst.copy_(read_to_host(self));
    }
    return dst;
  }
  Device& src_dev = hal_device(self);
  Device& dst_dev = hal_device(dst);
  Stream dst_stream = current_stream(dst.device().index());
  if (same_layout(self, dst)) {  // One block: a device copy, or a peer copy between devices.
    Stream src_stream = current_stream(self.device().index());
    translate("copying device to device", [&] {
      if (&src_dev == &dst_dev) {
        dst_stream.copy_d2d(dst.data_ptr(), self.const_data_ptr(), dst.nbytes());
      } else {
        copy_peer(dst_stream, dst.data_ptr(), src_stream, self.const_data_ptr(), dst.nbytes());
        if (!non_blocking) dst_stream.synchronize();  // The source may be freed on its own stream next.
      }
    });
    return dst;
  }
  if (&src_dev == &dst_dev && host_reachable(dst_dev)) {  // Strides or dtype change on one device: on the host.
    translate("synchronizing", [&] { dst_stream.synchronize(); });
    std::vector<HostView> views;
    at::Tensor out = host_alias(dst, views);
    out.copy_(host_alias(self, views));
    return dst;
  }
  write_from_host(dst, read_to_host(self), false);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  restride(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) { return read_to_host(self).item(); }

// --- Emulated speed ----------------------------------------------------------------------------------------
//
// An op on an emulated device of relative speed s < 1 takes T = c / s, where c is the CPU time the host spent
// on the kernel: CLOCK_THREAD_CPUTIME_ID of the thread that ran it. After the kernel the fallback sleeps
// max(0, T - wall), wall being the kernel's elapsed time. Pacing by CPU time rather than by wall time matters
// when the emulated devices share a few host cores with each other and with other processes: time a kernel
// spent waiting for a core is not work, so it is absorbed into the device's own slowness (the sleep shrinks)
// instead of being multiplied by 1/s. As long as the emulated devices' total demand (the sum of their speeds,
// in cores) fits the host, every device keeps its emulated speed whatever else runs.
//
// Thread CPU time counts only the calling thread, so a paced kernel must not hand work to torch's intra-op
// threads: it runs single-threaded (SingleThreaded below), and a paced device of speed s is s of ONE host
// core. at::set_num_threads is no tool for one op (process-wide, and it rebuilds thread pools); OpenMP's
// nthreads-var and MKL's local thread count are per-thread settings, so they are set to 1 around the kernel
// and restored. Devices at speed 1 are not paced and run kernels exactly as the CPU would, intra-op threads
// included (an emulated chip at host speed).

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

// Runs the kernels of its scope on the calling thread only; restores the thread's settings afterwards.
class SingleThreaded {
 public:
  SingleThreaded() : c_(thread_controls()) {
    at::internal::lazy_init_num_threads();  // First, or torch's lazy per-thread init would undo the 1 below.
    if (c_.omp_set) {
      omp_prev_ = c_.omp_get();
      c_.omp_set(1);
    }
    if (c_.mkl_local) mkl_prev_ = c_.mkl_local(1);
  }
  ~SingleThreaded() {
    if (c_.omp_set) c_.omp_set(omp_prev_);
    if (c_.mkl_local) c_.mkl_local(mkl_prev_);
  }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  const ThreadControls& c_;
  int omp_prev_ = 1;
  int mkl_prev_ = 0;  // 0: no local setting, MKL's global one applies.
};

std::chrono::nanoseconds thread_cpu_time() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

// Sleeps |owed| (when positive). A sleep overshoots by the timer slack and the wake-up (~50-100 us here, more than
// many small kernels take), so each thread carries what it overslept into its next sleeps: over a run of ops the
// device's time is cpu / s, not cpu / s plus a wake-up per op.
void pace(std::chrono::nanoseconds owed) {
  thread_local std::chrono::nanoseconds overslept{0};
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

// --- Fallback ----------------------------------------------------------------------------------------------

std::mutex g_fallback_mutex;
std::unordered_map<std::string, int64_t> g_fallback_counts;
std::unordered_set<std::string> g_blocklist;

bool is_generator_type(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::GeneratorType) return true;
  if (type->kind() == c10::TypeKind::OptionalType) {
    return type->expectRef<c10::OptionalType>().getElementType()->kind() == c10::TypeKind::GeneratorType;
  }
  return false;
}

std::string describe(c10::DeviceIndex index) {
  std::string out = "hal:" + std::to_string(int(index));
  try {
    out += " (" + device(index).name() + ")";
  } catch (...) {
  }
  return out;
}

struct Aliased {
  at::Tensor original;  // The hal tensor.
  at::Tensor alias;     // The CPU tensor over the same memory the kernel saw.
  void* host;           // The alias's host address before the kernel ran.
  bool written;         // The schema marks the argument as written.
};

// Visits every tensor of an IValue (a tensor, or a list of tensors / optional tensors), replacing it.
template <typename Fn>
c10::IValue map_tensors(const c10::IValue& value, Fn&& fn) {
  if (value.isTensor()) return fn(value.toTensor());
  if (value.isList()) {
    c10::List<c10::IValue> in = value.toList();
    bool any = false;
    for (const c10::IValue& e : in) any = any || e.isTensor();
    if (!any) return value;
    c10::impl::GenericList out(in.elementType());
    out.reserve(in.size());
    for (const c10::IValue& e : in) out.push_back(e.isTensor() ? fn(e.toTensor()) : e);
    return out;
  }
  return value;
}

}  // namespace

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const c10::FunctionSchema& schema = op.schema();
  const c10::OperatorName& name = schema.operator_name();
  const std::string full = name.overload_name.empty() ? name.name : name.name + "." + name.overload_name;
  const size_t num_args = schema.arguments().size();
  const size_t first = stack->size() - num_args;

  // The devices involved.
  std::vector<c10::DeviceIndex> devices;
  auto note = [&](const at::Tensor& t) {
    if (t.defined() && t.is_privateuseone() &&
        std::find(devices.begin(), devices.end(), t.device().index()) == devices.end()) {
      devices.push_back(t.device().index());
    }
    return c10::IValue(t);
  };
  for (size_t i = first; i < stack->size(); ++i) {
    const c10::IValue& v = (*stack)[i];
    map_tensors(v, note);
    if (v.isDevice() && v.toDevice().is_privateuseone() && devices.empty()) {
      devices.push_back(std::max<c10::DeviceIndex>(v.toDevice().index(), 0));
    }
  }
  const c10::DeviceIndex target = devices.empty() ? current_device() : devices.front();
  {
    std::lock_guard<std::mutex> lock(g_fallback_mutex);
    ++g_fallback_counts[full];
    TORCH_CHECK(g_blocklist.empty() || (!g_blocklist.count(full) && !g_blocklist.count(name.name)),
                "hal: operator '", full, "' has no native kernel for device ", describe(target),
                " and is on the fallback blocklist (torch.hal.set_fallback_blocklist / HAL_FALLBACK_BLOCKLIST), "
                "so it does not fall back to the CPU kernel");
  }
  check_not_forked();

  // Generators: the hal device's CPU-side state, so CPU kernels accept it and the device's stream advances.
  for (size_t i = 0; i < num_args; ++i) {
    c10::IValue& v = (*stack)[first + i];
    if (!is_generator_type(schema.arguments()[i].type())) continue;
    if (v.isGenerator() && v.toGenerator().device().is_privateuseone()) {
      v = cpu_generator_of(v.toGenerator());
    } else if (v.isNone() && !devices.empty()) {
      v = cpu_generator_of(default_generator(target));
    }
  }

  bool in_place = true;
  for (c10::DeviceIndex d : devices) in_place = in_place && host_reachable(device(d));
  if (!in_place) {
    at::native::cpu_fallback(op, stack);
    return;
  }

  // Stream order: the kernel runs after the work queued so far on each device's current stream.
  for (c10::DeviceIndex d : devices) {
    Stream s = current_stream(d);
    translate("synchronizing", [&] { s.synchronize(); });
  }

  std::vector<HostView> views;
  views.reserve(8);
  std::vector<Aliased> aliased;
  for (size_t i = 0; i < num_args; ++i) {
    c10::IValue& v = (*stack)[first + i];
    const c10::AliasInfo* info = schema.arguments()[i].alias_info();
    const bool written = info != nullptr && info->isWrite();
    v = map_tensors(v, [&](const at::Tensor& t) -> c10::IValue {
      if (!t.defined() || !t.is_privateuseone()) return t;
      at::Tensor alias = host_alias(t, views, written);
      aliased.push_back({t, alias, views.back().host(), written});
      return alias;
    });
    if (v.isDevice() && v.toDevice().is_privateuseone()) v = c10::IValue(c10::Device(c10::kCPU));
  }

  const double speed = device(target).properties().relative_speed;
  const bool paced = speed > 0 && speed < 1;  // See "Emulated speed".
  const auto start = std::chrono::steady_clock::now();
  // Thread CPU time costs a system call: only paced ops read it.
  const auto cpu_start = paced ? thread_cpu_time() : std::chrono::nanoseconds::zero();
  {
    struct GrowTarget {  // Restores the previous target even when the kernel throws.
      c10::DeviceIndex prev = tls_grow_device;
      ~GrowTarget() { tls_grow_device = prev; }
    } scope;
    tls_grow_device = target;
    std::optional<SingleThreaded> single_threaded;
    if (paced) single_threaded.emplace();
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  }
  const auto cpu = paced ? thread_cpu_time() - cpu_start : std::chrono::nanoseconds::zero();
  const auto wall = std::chrono::steady_clock::now() - start;

  // Written arguments the kernel resized: give the hal tensor the same geometry (and the data, when the
  // kernel had to move the alias to fresh host memory).
  for (const Aliased& a : aliased) {
    if (!a.written) continue;
    const at::Tensor& al = a.alias;
    const bool moved = al.storage().data() != a.host;
    if (moved || al.sizes() != a.original.sizes() || al.strides() != a.original.strides()) {
      const bool adopted = moved && adopt_grown(a.original, al);
      a.original.unsafeGetTensorImpl()->set_storage_offset(al.storage_offset());
      restride(a.original, al.sizes(), al.strides());
      if (moved && !adopted) write_from_host(a.original, al, false);
    }
  }

  // Results: aliases of arguments become the hal tensors (or views of them); new tensors go to the device.
  auto to_device = [&](const at::Tensor& out) -> c10::IValue {
    if (!out.defined() || !out.is_cpu()) return out;
    for (const Aliased& a : aliased) {
      if (out.unsafeGetTensorImpl() == a.alias.unsafeGetTensorImpl()) return a.original;
    }
    for (const Aliased& a : aliased) {
      if (out.storage().is_alias_of(a.alias.storage())) {
        return at::native::as_strided_tensorimpl(a.original, out.sizes(), out.strides(), out.storage_offset());
      }
    }
    at::Tensor result = out.is_non_overlapping_and_dense()
                            ? empty_strided(out.sizes(), out.strides(), out.scalar_type(), std::nullopt,
                                            c10::Device(c10::DeviceType::PrivateUse1, target), std::nullopt)
                            : empty_memory_format(out.sizes(), out.scalar_type(), std::nullopt,
                                                  c10::Device(c10::DeviceType::PrivateUse1, target), std::nullopt,
                                                  std::nullopt);
    if (result.numel() > 0) {
      std::vector<HostView> out_views;
      host_alias(result, out_views).copy_(out);
    }
    return result;
  };
  const size_t num_returns = schema.returns().size();
  for (size_t i = stack->size() - num_returns; i < stack->size(); ++i) {
    (*stack)[i] = map_tensors((*stack)[i], to_device);
  }

  // Emulated speed: the kernel takes cpu / s on the device; waiting for a core counts towards it.
  if (paced) pace(std::chrono::duration_cast<std::chrono::nanoseconds>(cpu / speed) - wall);
}

std::map<std::string, int64_t> fallback_stats() {
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  return {g_fallback_counts.begin(), g_fallback_counts.end()};
}

void reset_fallback_stats() {
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  g_fallback_counts.clear();
}

void set_fallback_blocklist(const std::vector<std::string>& names) {
  std::unordered_set<std::string> set;
  for (const std::string& n : names) {
    if (n.empty()) continue;
    set.insert(n.find("::") == std::string::npos ? "aten::" + n : n);
  }
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  g_blocklist = std::move(set);
}

std::vector<std::string> fallback_blocklist() {
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  std::vector<std::string> out(g_blocklist.begin(), g_blocklist.end());
  std::sort(out.begin(), out.end());
  return out;
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", TORCH_FN(empty_memory_format));
  m.impl("empty_strided", TORCH_FN(empty_strided));
  m.impl("as_strided", TORCH_FN(as_strided));
  m.impl("view", TORCH_FN(view));
  m.impl("_reshape_alias", TORCH_FN(reshape_alias));
  m.impl("resize_", TORCH_FN(resize_));
  m.impl("set_.source_Storage_storage_offset", TORCH_FN(set_source_storage_offset));
  m.impl("set_.source_Storage", TORCH_FN(set_source_storage));
  m.impl("set_.source_Tensor", TORCH_FN(set_source_tensor));
  m.impl("set_", TORCH_FN(set_empty));
  m.impl("_copy_from", TORCH_FN(copy_from));
  m.impl("_copy_from_and_resize", TORCH_FN(copy_from_and_resize));
  m.impl("_local_scalar_dense", TORCH_FN(local_scalar_dense));
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>()); }

}  // namespace hal::bridge
