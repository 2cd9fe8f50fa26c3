// Native operators and op statistics (operators.h).
#include "operators.h"

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "factories.h"
#include "fallback.h"
#include "host_access.h"
#include "runtime/compute.h"
#include "runtime_access.h"
#include "streams.h"

namespace hal::bridge {
namespace {

std::optional<hal_dtype_t> to_hal_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return HAL_DTYPE_F32;
    case c10::kHalf: return HAL_DTYPE_F16;
    case c10::kBFloat16: return HAL_DTYPE_BF16;
    case c10::kDouble: return HAL_DTYPE_F64;
    case c10::kFloat8_e4m3fn: return HAL_DTYPE_F8E4M3;
    case c10::kChar: return HAL_DTYPE_I8;
    case c10::kByte: return HAL_DTYPE_U8;
    case c10::kInt: return HAL_DTYPE_I32;
    case c10::kLong: return HAL_DTYPE_I64;
    case c10::kBool: return HAL_DTYPE_BOOL;
    case c10::kShort: return HAL_DTYPE_I16;
    case c10::kUInt16: return HAL_DTYPE_U16;
    case c10::kUInt32: return HAL_DTYPE_U32;
    case c10::kUInt64: return HAL_DTYPE_U64;
    case c10::kComplexFloat: return HAL_DTYPE_C64;
    case c10::kComplexDouble: return HAL_DTYPE_C128;
    default: return std::nullopt;
  }
}

bool is_hal(const at::Tensor& t) { return t.defined() && t.is_privateuseone(); }

// The boxed arguments of one call, and the storage their descriptors point into (valid while the call's
// tensors are alive, which the stack guarantees).
class Boxer {
 public:
  Boxer(c10::DeviceIndex target, uint64_t dtypes) : target_(target), dtypes_(dtypes) {}

  // A hal tensor of the target with an accepted dtype and layout, else nullopt.
  std::optional<hal_tensor_t> tensor(const at::Tensor& t) const {
    if (!is_hal(t) || t.device().index() != target_ || t.layout() != c10::kStrided || t.is_conj() || t.is_neg()) {
      return std::nullopt;
    }
    const std::optional<hal_dtype_t> dtype = to_hal_dtype(t.scalar_type());
    if (!dtype || (dtypes_ & HAL_DTYPE_BIT(*dtype)) == 0) return std::nullopt;
    for (int64_t s : t.strides()) {
      if (s < 0) return std::nullopt;
    }
    hal_tensor_t d{};
    d.data = t.numel() == 0 ? nullptr : t.storage().unsafeGetStorageImpl()->mutable_data();
    d.dtype = *dtype;
    d.ndim = static_cast<int32_t>(t.dim());
    d.sizes = t.sizes().data();
    d.strides = t.strides().data();
    d.offset = t.storage_offset();
    return d;
  }

  // Appends the value of schema argument |arg|; false when it cannot be boxed.
  bool add(const c10::Argument& arg, const c10::IValue& v) {
    hal_value_t out{};
    const c10::TypeKind kind = arg.type()->kind();
    const c10::TypePtr real = arg.real_type();
    if (kind == c10::TypeKind::GeneratorType ||
        (kind == c10::TypeKind::OptionalType &&
         real->expectRef<c10::OptionalType>().getElementType()->kind() == c10::TypeKind::GeneratorType)) {
      return false;  // Random ops keep torch's generators (the fallback hands them over).
    }
    if (v.isNone()) {
      out.kind = HAL_VALUE_NONE;
    } else if (v.isTensor()) {
      const at::Tensor& t = v.toTensor();
      if (!t.defined()) {
        out.kind = HAL_VALUE_NONE;
      } else if (t.is_cpu() && t.dim() == 0 && t.unsafeGetTensorImpl()->is_wrapped_number()) {
        if (!scalar(t.item(), &out)) return false;
      } else {
        const std::optional<hal_tensor_t> d = tensor(t);
        if (!d) return false;
        out.kind = HAL_VALUE_TENSOR;
        out.u.tensor = *d;
      }
    } else if (v.isBool()) {
      out.kind = HAL_VALUE_BOOL;
      out.u.i = v.toBool();
    } else if (v.isInt() || v.isSymInt()) {
      if (v.isSymInt() && !v.toSymInt().is_heap_allocated()) {
        out.kind = HAL_VALUE_INT;
        out.u.i = v.toSymInt().as_int_unchecked();
      } else if (v.isInt()) {
        // A ScalarType argument arrives as an int.
        if (real->kind() == c10::TypeKind::ScalarTypeType ||
            (real->kind() == c10::TypeKind::OptionalType &&
             real->expectRef<c10::OptionalType>().getElementType()->kind() == c10::TypeKind::ScalarTypeType)) {
          const std::optional<hal_dtype_t> dtype = to_hal_dtype(static_cast<c10::ScalarType>(v.toInt()));
          if (!dtype) return false;
          out.kind = HAL_VALUE_DTYPE;
          out.u.dtype = *dtype;
        } else if (real->kind() == c10::TypeKind::IntType || real->kind() == c10::TypeKind::SymIntType ||
                   real->kind() == c10::TypeKind::OptionalType || real->kind() == c10::TypeKind::NumberType) {
          out.kind = HAL_VALUE_INT;
          out.u.i = v.toInt();
        } else {
          return false;  // Layout, MemoryFormat, ... as ints.
        }
      } else {
        return false;
      }
    } else if (v.isDouble()) {
      out.kind = HAL_VALUE_FLOAT;
      out.u.f = v.toDouble();
    } else if (v.isScalar()) {
      if (!scalar(v.toScalar(), &out)) return false;
    } else if (v.isIntList()) {
      lists_.push_back(v.toIntVector());
      out.kind = HAL_VALUE_INT_LIST;
      out.u.ints.data = lists_.back().data();
      out.u.ints.size = lists_.back().size();
    } else if (v.isBoolList()) {  // bool[] (output_mask) as 0 / 1 ints, as kernel.h says.
      std::vector<int64_t> ints;
      for (const bool b : v.toBoolList()) ints.push_back(b ? 1 : 0);
      lists_.push_back(std::move(ints));
      out.kind = HAL_VALUE_INT_LIST;
      out.u.ints.data = lists_.back().data();
      out.u.ints.size = lists_.back().size();
    } else if (v.isSymIntList()) {
      std::vector<int64_t> ints;
      for (const c10::SymInt& s : v.toSymIntVector()) {
        if (s.is_heap_allocated()) return false;
        ints.push_back(s.as_int_unchecked());
      }
      lists_.push_back(std::move(ints));
      out.kind = HAL_VALUE_INT_LIST;
      out.u.ints.data = lists_.back().data();
      out.u.ints.size = lists_.back().size();
    } else if (v.isDoubleList()) {
      doubles_.push_back(v.toDoubleVector());
      out.kind = HAL_VALUE_FLOAT_LIST;
      out.u.floats.data = doubles_.back().data();
      out.u.floats.size = doubles_.back().size();
    } else if (v.isTensorList() || v.isList()) {
      std::vector<hal_tensor_t> ts;
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isNone() || (e.isTensor() && !e.toTensor().defined())) {
          hal_tensor_t absent{};
          absent.ndim = -1;
          ts.push_back(absent);
          continue;
        }
        if (!e.isTensor()) return false;
        const std::optional<hal_tensor_t> d = tensor(e.toTensor());
        if (!d) return false;
        ts.push_back(*d);
      }
      tensor_lists_.push_back(std::move(ts));
      out.kind = HAL_VALUE_TENSOR_LIST;
      out.u.tensors.data = tensor_lists_.back().data();
      out.u.tensors.size = tensor_lists_.back().size();
    } else if (v.isString()) {
      strings_.push_back(v.toStringRef());
      out.kind = HAL_VALUE_STRING;
      out.u.string = strings_.back().c_str();
    } else {
      return false;  // Device, Layout, MemoryFormat objects, ...
    }
    values_.push_back(out);
    return true;
  }

  const std::vector<hal_value_t>& values() const { return values_; }

 private:
  static bool scalar(const c10::Scalar& s, hal_value_t* out) {
    if (s.isBoolean()) {
      out->kind = HAL_VALUE_BOOL;
      out->u.i = s.toBool();
    } else if (s.isIntegral(false)) {
      out->kind = HAL_VALUE_INT;
      out->u.i = s.toLong();
    } else if (s.isFloatingPoint()) {
      out->kind = HAL_VALUE_FLOAT;
      out->u.f = s.toDouble();
    } else {
      return false;  // Complex and symbolic scalars.
    }
    return true;
  }

  c10::DeviceIndex target_;
  uint64_t dtypes_;
  std::vector<hal_value_t> values_;
  // Deques would do too; lists keep element addresses stable as they grow.
  std::list<std::vector<int64_t>> lists_;
  std::list<std::vector<double>> doubles_;
  std::list<std::vector<hal_tensor_t>> tensor_lists_;
  std::list<std::string> strings_;
};

// Whether every return is a tensor or a tensor list. An operator returning nothing (_fused_adamw_, the in-place
// _foreach_ ops) only writes its arguments; the plugin gets no results.
bool returns_are_tensors(const c10::FunctionSchema& schema) {
  for (const c10::Argument& r : schema.returns()) {
    const c10::TypeKind k = r.type()->kind();
    if (k == c10::TypeKind::TensorType) continue;
    if (k == c10::TypeKind::ListType &&
        r.type()->expectRef<c10::ListType>().getElementType()->kind() == c10::TypeKind::TensorType) {
      continue;
    }
    return false;
  }
  return true;
}

// The argument a write-aliasing return refers to ("Tensor(a!) self ... -> Tensor(a!)"), or -1.
int written_argument(const c10::FunctionSchema& schema, const c10::Argument& ret) {
  const c10::AliasInfo* info = ret.alias_info();
  if (info == nullptr || !info->isWrite()) return -1;
  for (size_t i = 0; i < schema.arguments().size(); ++i) {
    const c10::AliasInfo* a = schema.arguments()[i].alias_info();
    if (a != nullptr && a->isWrite() && a->beforeSets() == info->beforeSets()) return static_cast<int>(i);
  }
  return -1;
}

// --- Result geometry -------------------------------------------------------------------------------------------

struct TensorGeometry {
  std::vector<int64_t> sizes, strides;
  c10::ScalarType dtype;
  bool dense;  // Non-overlapping and dense: allocate with these strides (else contiguous).
  bool absent = false;  // An undefined return (a masked gradient): undefined, and ndim -1 for the plugin.
};
struct Geometry {
  std::vector<TensorGeometry> tensors;  // Every returned tensor, lists flattened, in order.
  std::vector<int64_t> list_sizes;      // Per return: -1 for a Tensor, the length of a Tensor[].
  // Written (out=) arguments the Meta kernel resized, by argument index: resized so before the launch, as the
  // op's own kernel would (resize_output).
  std::vector<std::pair<size_t, TensorGeometry>> resized;
};

// What the Meta kernel's answer depends on: the op, and per argument its tensors' dtypes and geometry (not
// their data or device) and every other value.
std::string geometry_key(const c10::OperatorHandle& op, const torch::jit::Stack& stack, size_t first) {
  std::string key;
  key.reserve(256);
  auto put = [&](const void* p, size_t n) { key.append(static_cast<const char*>(p), n); };
  auto put_i = [&](int64_t v) { put(&v, sizeof(v)); };
  auto put_tensor = [&](const at::Tensor& t) {
    if (!t.defined()) {
      key.push_back('u');
      return;
    }
    key.push_back(t.unsafeGetTensorImpl()->is_wrapped_number() ? 'w' : 't');
    put_i(static_cast<int64_t>(t.scalar_type()));
    put_i(t.dim());
    for (int64_t d : t.sizes()) put_i(d);
    for (int64_t d : t.strides()) put_i(d);
  };
  const void* id = &op.schema();
  put(&id, sizeof(id));
  for (size_t i = first; i < stack.size(); ++i) {
    const c10::IValue& v = stack[i];
    if (v.isTensor()) {
      put_tensor(v.toTensor());
    } else if (v.isList()) {
      key.push_back('[');
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor()) {
          put_tensor(e.toTensor());
        } else {
          key += e.isNone() ? std::string("n") : e.isInt() ? "i" + std::to_string(e.toInt()) : "?";
          if (e.isDouble()) {
            const double d = e.toDouble();
            put(&d, sizeof(d));
          }
        }
      }
      key.push_back(']');
    } else if (v.isInt()) {
      key.push_back('i');
      put_i(v.toInt());
    } else if (v.isDouble()) {
      key.push_back('d');
      const double d = v.toDouble();
      put(&d, sizeof(d));
    } else if (v.isBool()) {
      key += v.toBool() ? "T" : "F";
    } else if (v.isNone()) {
      key.push_back('n');
    } else if (v.isString()) {
      key += "s" + v.toStringRef() + '\0';
    } else if (v.isScalar()) {
      const c10::Scalar sc = v.toScalar();
      key.push_back(sc.isBoolean() ? 'B' : sc.isIntegral(false) ? 'I' : 'D');
      if (sc.isIntegral(false) || sc.isBoolean()) {
        put_i(sc.toLong());
      } else {
        const double d = sc.toDouble();
        put(&d, sizeof(d));
      }
    } else {
      key += "x" + v.tagKind() + '\0';  // Boxing refused these; never reached.
    }
  }
  return key;
}

std::mutex g_geometry_mutex;
std::unordered_map<std::string, std::optional<Geometry>> g_geometry;  // nullopt: a written argument resized
constexpr size_t kMaxGeometries = 1 << 16;

// The results' geometry by the op's Meta kernel on stand-ins of the arguments, or nullopt when the kernel
// resizes a written argument (then not for the plugin). Throws the Meta kernel's errors (shape checks).
std::optional<Geometry> results_geometry(const c10::OperatorHandle& op, const torch::jit::Stack& stack,
                                         size_t first) {
  std::string key = geometry_key(op, stack, first);
  {
    std::lock_guard<std::mutex> lock(g_geometry_mutex);
    const auto it = g_geometry.find(key);
    if (it != g_geometry.end()) return it->second;
  }
  torch::jit::Stack meta(stack.begin() + static_cast<std::ptrdiff_t>(first), stack.end());
  struct StandIn {
    at::Tensor hal, meta;
    int arg;  // Argument index of a top-level tensor; -1 inside a list.
  };
  std::vector<StandIn> stand_ins;
  for (size_t i = 0; i < meta.size(); ++i) {
    c10::IValue& v = meta[i];
    auto to_meta = [&](const at::Tensor& t, int arg) -> c10::IValue {
      if (!is_hal(t)) return t;
      stand_ins.push_back({t, meta_like(t), arg});
      return stand_ins.back().meta;
    };
    if (v.isTensor()) {
      v = to_meta(v.toTensor(), static_cast<int>(i));
    } else if (v.isList()) {
      c10::List<c10::IValue> in = v.toList();
      c10::impl::GenericList out(in.elementType());
      for (const c10::IValue& e : in) out.push_back(e.isTensor() ? to_meta(e.toTensor(), -1) : e);
      v = out;
    }
  }
  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::Meta), &meta);
  std::optional<Geometry> geometry = Geometry{};
  for (const StandIn& s : stand_ins) {
    const at::Tensor &t = s.hal, &m = s.meta;
    if (m.sizes() == t.sizes() && m.strides() == t.strides() && m.storage_offset() == t.storage_offset()) continue;
    const c10::AliasInfo* info = s.arg >= 0 ? op.schema().arguments()[s.arg].alias_info() : nullptr;
    if (info == nullptr || !info->isWrite() || m.storage_offset() != t.storage_offset()) {
      geometry.reset();  // A read argument, or a list element, changed: not for the plugin.
      break;
    }
    geometry->resized.push_back({static_cast<size_t>(s.arg), {m.sizes().vec(), m.strides().vec(), m.scalar_type(),
                                                               m.is_non_overlapping_and_dense()}});
  }
  auto note = [&](const at::Tensor& m) {
    if (!m.defined()) {
      geometry->tensors.push_back({{}, {}, c10::ScalarType::Undefined, false, true});
      return;
    }
    geometry->tensors.push_back({m.sizes().vec(), m.strides().vec(), m.scalar_type(), m.is_non_overlapping_and_dense()});
  };
  for (size_t r = 0; geometry && r < meta.size(); ++r) {
    if (meta[r].isTensor()) {
      note(meta[r].toTensor());
      geometry->list_sizes.push_back(-1);
    } else if (meta[r].isTensorList()) {
      const std::vector<at::Tensor> list = meta[r].toTensorVector();
      for (const at::Tensor& m : list) note(m);
      geometry->list_sizes.push_back(static_cast<int64_t>(list.size()));
    } else {
      geometry.reset();
    }
  }
  std::lock_guard<std::mutex> lock(g_geometry_mutex);
  if (g_geometry.size() >= kMaxGeometries) g_geometry.clear();
  g_geometry.emplace(std::move(key), geometry);
  return geometry;
}

std::mutex g_stats_mutex;
std::unordered_map<std::string, OpStats> g_stats;

std::mutex g_registered_mutex;
std::unordered_set<std::string> g_registered;  // Ops given the router as their PrivateUse1 kernel (below).

// Gives each operator some loaded plugin declares a PrivateUse1 kernel: the boxed fallback, which routes every
// call by its device (operators.h). Without it, a functional op such as add.Tensor would reach hal tensors
// through its CompositeExplicitAutogradNonFunctional kernel (which calls add.out), never as itself. Operators
// that already have a PrivateUse1 kernel (copies, factories) or that this torch does not know are skipped.
void register_plugin_operators(Runtime& rt) {
  static torch::Library* library = nullptr;  // Lives as long as the process: the registrations stay.
  std::unordered_set<std::string> seen;
  for (int i = 0; i < rt.device_count(); ++i) {
    const OperatorTable* table = nullptr;
    try {
      table = &rt.device(i).operators();
    } catch (const std::exception&) {
      continue;  // The op_list failure is reported when the device's operators are used.
    }
    for (const OperatorInfo& info : table->all()) {
      if (!seen.insert(info.name).second || info.name.rfind("aten::", 0) != 0) continue;
      // copy_ reaches the bridge's copies (_copy_from), which know host and device sides; they call the
      // plugin's copy_ kernel themselves for copies within a device (copies.cpp).
      if (info.name == "aten::copy_") continue;
      const std::string qualified = info.name.substr(6);
      const size_t dot = qualified.find('.');
      const c10::OperatorName name("aten::" + qualified.substr(0, dot),
                                   dot == std::string::npos ? "" : qualified.substr(dot + 1));
      const std::optional<c10::OperatorHandle> op = c10::Dispatcher::singleton().findOp(name);
      if (!op || op->hasKernelForDispatchKey(c10::DispatchKey::PrivateUse1)) continue;
      if (library == nullptr) {
        library = new torch::Library(torch::Library::IMPL, "aten", c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
      }
      library->impl(qualified.c_str(), torch::CppFunction::makeFromBoxedFunction<&fallback>());
      std::lock_guard<std::mutex> lock(g_registered_mutex);
      g_registered.insert(info.name);
    }
  }
}

const bool g_registered_hook = on_runtime_ready(register_plugin_operators);

}  // namespace

std::string op_name(const c10::FunctionSchema& schema) {
  const c10::OperatorName& n = schema.operator_name();
  return n.overload_name.empty() ? n.name : n.name + "." + n.overload_name;
}

Native run_native(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::DeviceIndex target) {
  Device& dev = device(target);
  const OperatorTable& table = translate("reading the device's operators", [&]() -> const OperatorTable& {
    return dev.operators();
  });
  if (table.all().empty()) return Native::kNot;
  const c10::FunctionSchema& schema = op.schema();
  const int64_t index = table.find(op_name(schema));
  if (index < 0 || !returns_are_tensors(schema) || !op.hasComputedKernelForDispatchKey(c10::DispatchKey::Meta)) {
    return Native::kNot;
  }
  const uint64_t dtypes = table.all()[index].dtypes;

  const size_t num_args = schema.arguments().size();
  const size_t first = stack->size() - num_args;
  Boxer boxer(target, dtypes);
  for (size_t i = 0; i < num_args; ++i) {
    if (!boxer.add(schema.arguments()[i], (*stack)[first + i])) return Native::kNot;
  }

  // The results' dtypes and geometry (memoized: the Meta kernel is often Python, ~100 us a call).
  const std::optional<Geometry> geometry = results_geometry(op, *stack, first);
  if (!geometry) return Native::kNot;
  if (!geometry->resized.empty()) {  // out= arguments of another shape: resized, then boxed again.
    for (const auto& [arg, g] : geometry->resized) restride((*stack)[first + arg].toTensor(), g.sizes, g.strides);
    boxer = Boxer(target, dtypes);
    for (size_t i = 0; i < num_args; ++i) {
      if (!boxer.add(schema.arguments()[i], (*stack)[first + i])) return Native::kNot;
    }
  }

  // Allocate the results (or take the written arguments they alias).
  std::vector<c10::IValue> returns;
  std::vector<at::Tensor> result_tensors;
  auto allocate = [&](const TensorGeometry& g) -> at::Tensor {
    if (g.absent) return at::Tensor();
    return empty_on(target, g.sizes, g.dense ? c10::IntArrayRef(g.strides) : c10::IntArrayRef(), g.dtype);
  };
  size_t next = 0;
  for (size_t r = 0; r < schema.returns().size(); ++r) {
    const int written = written_argument(schema, schema.returns()[r]);
    const int64_t count = geometry->list_sizes[r];
    if (count < 0) {
      at::Tensor t = written >= 0 ? (*stack)[first + written].toTensor() : allocate(geometry->tensors[next]);
      ++next;
      result_tensors.push_back(t);
      returns.emplace_back(t);
    } else if (written >= 0) {
      for (const at::Tensor& t : (*stack)[first + written].toTensorVector()) result_tensors.push_back(t);
      returns.push_back((*stack)[first + written]);
      next += static_cast<size_t>(count);
    } else {
      std::vector<at::Tensor> list;
      for (int64_t i = 0; i < count; ++i) list.push_back(allocate(geometry->tensors[next++]));
      result_tensors.insert(result_tensors.end(), list.begin(), list.end());
      returns.emplace_back(c10::List<at::Tensor>(list));
    }
  }
  std::vector<hal_tensor_t> results;
  for (const at::Tensor& t : result_tensors) {
    if (!t.defined()) {  // An absent return: the plugin skips it (kernel.h).
      hal_tensor_t absent{};
      absent.ndim = -1;
      results.push_back(absent);
      continue;
    }
    const std::optional<hal_tensor_t> d = boxer.tensor(t);
    if (!d) return Native::kNot;
    results.push_back(*d);
  }

  const Stream stream = current_stream(target);
  const bool queued = translate(("running " + op_name(schema)).c_str(), [&] {
    return launch_operator(stream, index, boxer.values().data(), boxer.values().size(), results.data(),
                           results.size());
  });
  if (!queued) return Native::kDeclined;
  stack->erase(stack->begin() + static_cast<std::ptrdiff_t>(first), stack->end());
  for (c10::IValue& v : returns) stack->push_back(std::move(v));
  return Native::kRan;
}

bool run_as_before_registration(const c10::OperatorHandle& op, torch::jit::Stack* stack, const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(g_registered_mutex);
    if (!g_registered.count(name)) return false;
  }
  for (c10::DispatchKey key : {c10::DispatchKey::CompositeExplicitAutogradNonFunctional,
                               c10::DispatchKey::CompositeExplicitAutograd, c10::DispatchKey::CompositeImplicitAutograd}) {
    if (op.hasKernelForDispatchKey(key)) {
      c10::Dispatcher::singleton().callBoxedForDispatchKey(op, key, stack);
      return true;
    }
  }
  return false;
}

void record_op(const std::string& op, OpPath path, int64_t ns, bool declined, int64_t waited_ns) {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  OpStats& s = g_stats[op];
  OpPathStats& p = path == OpPath::kNative ? s.native : path == OpPath::kDecomposed ? s.decomposed : s.fallback;
  ++p.calls;
  p.ns += ns;
  p.waited_ns += waited_ns;
  s.declined += declined ? 1 : 0;
}

std::map<std::string, OpStats> op_stats() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  return {g_stats.begin(), g_stats.end()};
}

void reset_op_stats() {
  std::lock_guard<std::mutex> lock(g_stats_mutex);
  g_stats.clear();
}

}  // namespace hal::bridge
