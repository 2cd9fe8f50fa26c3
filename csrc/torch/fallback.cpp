// The boxed fallback of the `hal` backend (fallback.h): the one entry of every op on hal tensors without a kernel
// of the bridge's own. An op whose tensors lie on one device runs the device plugin's kernel when it declares
// one (operators.h), else its decomposition into the plugin's kernels when there is one (decompositions.h);
// every other op runs, in these steps:
//  1. find the hal devices of its arguments (the first is the target: new results go there);
//  2. count it, and refuse it when it is on the blocklist;
//  3. hand CPU kernels the hal generator's CPU state (or the target's default generator when none is given);
//  4. run it by one of three paths:
//     - view ops (a return aliases an argument without writing it): the op's Meta kernel computes the view's
//       geometry, and the results become views of the hal tensors' storage (no data moves, any device);
//     - host-reachable devices (host-addressable, or mappable through memory_map): IN PLACE. The devices'
//       current streams are synchronized (stream order), every hal argument becomes a CPU tensor aliasing the
//       same memory (with its conjugate / negative bits), the CPU kernel runs, written arguments it resized
//       take the new geometry, results that alias an argument come back as views of the hal tensor (with the
//       result's dtype and geometry), and only results the kernel created are copied to the target;
//     - other devices: at::native::cpu_fallback (arguments copied to the host and results back).
// Emulated devices with relative speed s < 1 are paced on the in-place path (emulation.h).
#include "fallback.h"

#include <ATen/native/CPUFallback.h>
#include <torch/library.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "copies.h"
#include "device_allocator.h"
#include "emulation.h"
#include "factories.h"
#include "generator.h"
#include "host_access.h"
#include "decompositions.h"
#include "operators.h"
#include "runtime_access.h"
#include "streams.h"

namespace hal::bridge {
namespace {

std::mutex g_fallback_mutex;
std::unordered_map<std::string, int64_t> g_fallback_counts;
std::unordered_set<std::string> g_blocklist;

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

bool is_hal(const at::Tensor& t) { return t.defined() && t.is_privateuseone(); }

// The arguments of one fallback call on the stack.
struct Call {
  const c10::OperatorHandle& op;
  torch::jit::Stack* stack;
  const c10::FunctionSchema& schema = op.schema();
  const size_t num_args = schema.arguments().size();
  const size_t first = stack->size() - num_args;

  c10::IValue& arg(size_t i) const { return (*stack)[first + i]; }
  // Replaces every returned tensor by fn(tensor); call after the kernel ran.
  template <typename Fn>
  void map_returns(Fn&& fn) const {
    for (size_t i = stack->size() - schema.returns().size(); i < stack->size(); ++i) {
      (*stack)[i] = map_tensors((*stack)[i], fn);
    }
  }
  std::string name() const { return op_name(schema); }
};

// Step 1: the hal devices of the tensor arguments, in order of appearance (or of a hal device argument).
std::vector<c10::DeviceIndex> devices_of(const Call& call) {
  std::vector<c10::DeviceIndex> devices;
  auto note = [&](const at::Tensor& t) {
    if (is_hal(t) && std::find(devices.begin(), devices.end(), t.device().index()) == devices.end()) {
      devices.push_back(t.device().index());
    }
    return c10::IValue(t);
  };
  for (size_t i = 0; i < call.num_args; ++i) {
    const c10::IValue& v = call.arg(i);
    map_tensors(v, note);
    if (v.isDevice() && v.toDevice().is_privateuseone() && devices.empty()) {
      devices.push_back(std::max<c10::DeviceIndex>(v.toDevice().index(), 0));
    }
  }
  return devices;
}

// Step 2.
void count_and_check_blocklist(const Call& call, c10::DeviceIndex target) {
  const std::string full = call.name();
  std::lock_guard<std::mutex> lock(g_fallback_mutex);
  ++g_fallback_counts[full];
  TORCH_CHECK(g_blocklist.empty() || (!g_blocklist.count(full) && !g_blocklist.count(call.schema.name())),
              "hal: operator '", full, "' has no native kernel for device ", describe(target),
              " and is on the fallback blocklist (torch.hal.set_fallback_blocklist / HAL_FALLBACK_BLOCKLIST), "
              "so it does not fall back to the CPU kernel");
}

bool is_generator_type(const c10::TypePtr& type) {
  if (type->kind() == c10::TypeKind::GeneratorType) return true;
  if (type->kind() == c10::TypeKind::OptionalType) {
    return type->expectRef<c10::OptionalType>().getElementType()->kind() == c10::TypeKind::GeneratorType;
  }
  return false;
}

// Step 3: the hal device's CPU-side state, so CPU kernels accept it and the device's random stream advances.
void substitute_generators(const Call& call, c10::DeviceIndex target, bool has_hal_args) {
  for (size_t i = 0; i < call.num_args; ++i) {
    if (!is_generator_type(call.schema.arguments()[i].type())) continue;
    c10::IValue& v = call.arg(i);
    if (v.isGenerator() && v.toGenerator().device().is_privateuseone()) {
      v = cpu_generator_of(v.toGenerator());
    } else if (v.isNone() && has_hal_args) {
      v = cpu_generator_of(default_generator(target));
    }
  }
}

// --- View ops -------------------------------------------------------------------------------------------------

bool returns_views(const c10::FunctionSchema& schema) {
  for (const c10::Argument& r : schema.returns()) {
    if (r.alias_info() != nullptr && !r.alias_info()->isWrite()) return true;
  }
  return false;
}

void run_view_op(const Call& call, c10::DeviceIndex target) {
  std::vector<std::pair<at::Tensor, at::Tensor>> bases;  // (hal tensor, its meta stand-in)
  for (size_t i = 0; i < call.num_args; ++i) {
    c10::IValue& v = call.arg(i);
    v = map_tensors(v, [&](const at::Tensor& t) -> c10::IValue {
      if (!is_hal(t)) return t;
      bases.emplace_back(t, meta_like(t));
      return bases.back().second;
    });
  }
  call.op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::Meta), call.stack);
  call.map_returns([&](const at::Tensor& out) -> c10::IValue {
    if (!out.defined() || !out.is_meta()) return out;
    for (const auto& [base, meta] : bases) {
      if (out.storage().is_alias_of(meta.storage())) return view_like(base, out);
    }
    TORCH_CHECK(false, "hal: operator '", call.name(), "' on ", describe(target),
                " returned a tensor that is no view of its arguments; it cannot run through the view path");
  });
}

// --- In place on host-reachable devices -----------------------------------------------------------------

// Memory a CPU kernel gets when it grows a written argument (out= resized by resize_output): device memory of
// the fallback's target, seen through a host mapping, so the result needs no copy afterwards (the fallback
// moves the device allocation into the hal tensor's storage; see adopt_grown).
struct GrownContext {
  c10::DataPtr device_memory;
  HostMapping mapping;
};

void free_grown(void* ctx) { delete static_cast<GrownContext*>(ctx); }

thread_local c10::DeviceIndex tls_grow_device = -1;

struct GrowAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    TORCH_CHECK(tls_grow_device >= 0, "hal: internal error: alias grown outside a fallback");
    c10::DataPtr mem = allocate_on(tls_grow_device, nbytes);
    HostMapping mapping(device(tls_grow_device), mem.get(), nbytes);
    void* host = mapping.host();
    return {host, new GrownContext{std::move(mem), std::move(mapping)}, &free_grown, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};

GrowAllocator g_grow_allocator;

// Makes GrowAllocator allocate on |target| for the scope (restoring the previous target, also on throw).
class GrowInto {
 public:
  explicit GrowInto(c10::DeviceIndex target) : prev_(tls_grow_device) { tls_grow_device = target; }
  ~GrowInto() { tls_grow_device = prev_; }
  GrowInto(const GrowInto&) = delete;
  GrowInto& operator=(const GrowInto&) = delete;

 private:
  c10::DeviceIndex prev_;
};

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

struct Aliased {
  at::Tensor original;  // The hal tensor.
  at::Tensor alias;     // The CPU tensor over the same memory the kernel saw.
  void* host;           // The alias's host address before the kernel ran.
  bool written;         // The schema marks the argument as written.
};

// Every hal argument becomes a CPU alias; a hal device argument becomes the CPU.
std::vector<Aliased> alias_arguments(const Call& call, HostAliases& aliases) {
  std::vector<Aliased> aliased;
  for (size_t i = 0; i < call.num_args; ++i) {
    c10::IValue& v = call.arg(i);
    const c10::AliasInfo* info = call.schema.arguments()[i].alias_info();
    const bool written = info != nullptr && info->isWrite();
    v = map_tensors(v, [&](const at::Tensor& t) -> c10::IValue {
      if (!is_hal(t)) return t;
      at::Tensor alias = aliases.alias(t, written ? &g_grow_allocator : nullptr);
      aliased.push_back({t, alias, alias.storage().mutable_data(), written});
      return alias;
    });
    if (v.isDevice() && v.toDevice().is_privateuseone()) v = c10::IValue(c10::Device(c10::kCPU));
  }
  return aliased;
}

// Written arguments the kernel resized or re-flagged: give the hal tensor the same geometry and math bits (some
// out= kernels, e.g. linalg_lu_solve with left=False, return their result as a conjugated view), and the data
// when the kernel had to move the alias to fresh host memory.
void adopt_written_arguments(const std::vector<Aliased>& aliased) {
  for (const Aliased& a : aliased) {
    if (!a.written) continue;
    const at::Tensor& al = a.alias;
    a.original._set_conj(al.is_conj());
    a.original._set_neg(al.is_neg());
    const bool moved = al.storage().data() != a.host;
    if (!moved && al.sizes() == a.original.sizes() && al.strides() == a.original.strides()) continue;
    const bool adopted = moved && adopt_grown(a.original, al);
    a.original.unsafeGetTensorImpl()->set_storage_offset(al.storage_offset());
    restride(a.original, al.sizes(), al.strides());
    if (moved && !adopted) write_from_host(a.original, al, false);
  }
}

// Results: aliases of arguments become the hal tensors (or views of them); new tensors go to the target.
c10::IValue result_to_device(const Call& call, const at::Tensor& out, const std::vector<Aliased>& aliased,
                             c10::DeviceIndex target) {
  if (!out.defined() || !out.is_cpu()) return out;
  TORCH_CHECK_NOT_IMPLEMENTED(out.layout() == c10::kStrided, "hal: operator '", call.name(), "' returns a ",
                              out.layout(), " tensor, which cannot live on ", describe(target),
                              ": hal devices hold strided tensors only");
  for (const Aliased& a : aliased) {
    if (out.unsafeGetTensorImpl() == a.alias.unsafeGetTensorImpl()) return a.original;
  }
  for (const Aliased& a : aliased) {
    if (out.storage().is_alias_of(a.alias.storage())) return view_like(a.original, out);
  }
  at::Tensor result = empty_on(target, out.sizes(), out.is_non_overlapping_and_dense() ? out.strides() : c10::IntArrayRef(),
                               out.scalar_type());
  if (result.numel() > 0) {
    HostAliases aliases;
    aliases.alias(result).copy_(out);
  }
  return result;
}

// Runs |kernel|; an op the CPU cannot run either (no CPU kernel) raises NotImplementedError naming the op and the
// hal device, not only the CPU backend.
template <typename Fn>
void run_naming_op_and_device(const Call& call, c10::DeviceIndex target, Fn&& kernel) {
  try {
    kernel();
  } catch (const c10::NotImplementedError& e) {
    TORCH_CHECK_NOT_IMPLEMENTED(false, "hal: operator '", call.name(), "' cannot run on ", describe(target),
                                ": it has no native kernel and its CPU kernel fails: ", e.msg());
  }
}

// Stream order: waits for the work queued so far on each device's current stream; returns how long that took
// (the device's time, not the fallback's).
int64_t wait_for_devices(const std::vector<c10::DeviceIndex>& devices) {
  const auto start = std::chrono::steady_clock::now();
  for (c10::DeviceIndex d : devices) {
    Stream s = current_stream(d);
    translate("synchronizing", [&] { s.synchronize(); });
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
}

void run_in_place(const Call& call, const std::vector<c10::DeviceIndex>& devices, c10::DeviceIndex target) {
  HostAliases aliases;
  const std::vector<Aliased> aliased = alias_arguments(call, aliases);
  EmulatedSpeed speed(device(target).properties().relative_speed);
  {
    GrowInto grow(target);
    run_naming_op_and_device(call, target, [&] {
      call.op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), call.stack);
    });
  }
  speed.kernel_done();
  adopt_written_arguments(aliased);
  call.map_returns([&](const at::Tensor& out) { return result_to_device(call, out, aliased, target); });
  speed.pace();  // The kernel takes cpu / s on the device; waiting for a core counts towards it.
}

}  // namespace

namespace {

void route(const c10::OperatorHandle& op, torch::jit::Stack* stack, bool composite) {
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed_ns = [&] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  };
  const Call call{op, stack};
  const std::vector<c10::DeviceIndex> devices = devices_of(call);
  const c10::DeviceIndex target = devices.empty() ? current_device() : devices.front();
  check_not_forked();
  if (returns_views(call.schema) && !devices.empty() && op.hasKernelForDispatchKey(c10::DispatchKey::Meta)) {
    run_view_op(call, target);  // No data moves, on any device: counted as native.
    record_op(call.name(), OpPath::kNative, elapsed_ns());
    return;
  }
  bool declined = false;
  if (devices.size() == 1) {
    const Native native = run_native(op, stack, target);
    if (native == Native::kRan) {
      record_op(call.name(), OpPath::kNative, elapsed_ns());
      return;
    }
    declined = native == Native::kDeclined;
    if (native == Native::kNot && run_decomposed(op, stack, target)) {
      record_op(call.name(), OpPath::kDecomposed, elapsed_ns());
      return;
    }
  }
  if (composite && !declined && run_as_before_registration(op, stack, call.name())) return;  // Pieces counted.
  count_and_check_blocklist(call, target);
  substitute_generators(call, target, !devices.empty());
  const int64_t waited = wait_for_devices(devices);

  bool in_place = true;
  for (c10::DeviceIndex d : devices) in_place = in_place && host_reachable(device(d));
  if (in_place) {
    run_in_place(call, devices, target);
  } else {
    TORCH_CHECK(!returns_views(call.schema), "hal: view operator '", call.name(), "' has no Meta kernel, so it "
                "cannot run on ", describe(target), ", whose memory the host cannot map");
    run_naming_op_and_device(call, target, [&] { at::native::cpu_fallback(op, stack); });
  }
  record_op(call.name(), OpPath::kFallback, elapsed_ns() - waited, declined, waited);
}

}  // namespace

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) { route(op, stack, true); }

void fallback_without_composite(const c10::OperatorHandle& op, torch::jit::Stack* stack) { route(op, stack, false); }

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

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>()); }

// Functional ops whose CompositeExplicitAutogradNonFunctional kernel outranks the fallback above and calls the out=
// variant with a 0-dim output, which CPU's out kernel then resizes with a deprecation warning on every call: on hal
// tensors they run the CPU kernel of the functional op itself, as CPU tensors do.
TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("mse_loss", torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

}  // namespace hal::bridge
