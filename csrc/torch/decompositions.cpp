// Decompositions into the plugin's kernels (decompositions.h).
#include "decompositions.h"

#include <pybind11/pybind11.h>
#include <torch/csrc/jit/python/pybind_utils.h>

#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "operators.h"
#include "runtime_access.h"

namespace py = pybind11;

namespace hal::bridge {
namespace {

std::mutex g_mutex;
// The ops this thread is running as their decomposition: one that comes back into itself (through torch's out=
// wrappers) falls back instead of recursing.
thread_local std::unordered_set<std::string> tls_running;
// (device index, "aten::gelu") -> whether it decomposes into that device's kernels.
std::unordered_map<std::string, bool> g_plans;

// hal.torch.decompositions, imported once and kept for the life of the process (never destroyed at exit).
py::object& python_side() {
  static py::object* module = new py::object(py::module_::import("hal.torch.decompositions"));
  return *module;
}

}  // namespace

bool run_decomposed(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::DeviceIndex target) {
  if (!Py_IsInitialized() || _Py_IsFinalizing()) return false;
  Device& dev = device(target);
  if (translate("reading the device's operators", [&]() -> size_t { return dev.operators().all().size(); }) == 0) {
    return false;  // Nothing to decompose into.
  }
  const c10::FunctionSchema& schema = op.schema();
  const std::string name = op_name(schema);
  const size_t num_args = schema.arguments().size();
  const size_t first = stack->size() - num_args;
  // Per device, op and the dtypes of its tensors: a decomposition valid for f32 may not be for complex.
  std::string key = std::to_string(target) + "/" + name;
  for (size_t i = first; i < stack->size(); ++i) {
    const c10::IValue& v = (*stack)[i];
    if (v.isTensor() && v.toTensor().defined()) key += "/" + std::string(c10::toString(v.toTensor().scalar_type()));
  }
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    const auto it = g_plans.find(key);
    if (it != g_plans.end() && !it->second) return false;
  }
  if (tls_running.count(name)) return false;
  tls_running.insert(name);
  struct Leave {
    const std::string& n;
    ~Leave() { tls_running.erase(n); }
  } leave{name};
  py::gil_scoped_acquire gil;
  try {
    py::list args;
    py::dict kwargs;
    for (size_t i = 0; i < num_args; ++i) {
      const c10::Argument& a = schema.arguments()[i];
      py::object value = torch::jit::toPyObject((*stack)[first + i]);
      if (a.kwarg_only()) {
        kwargs[py::str(a.name())] = value;
      } else {
        args.append(value);
      }
    }
    bool planned;
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      planned = g_plans.count(key) > 0;
    }
    if (!planned) {
      const bool decomposes = python_side().attr("plan")(int(target), name, py::tuple(args), kwargs).cast<bool>();
      std::lock_guard<std::mutex> lock(g_mutex);
      g_plans[key] = decomposes;
      if (!decomposes) return false;
    }
    py::object result = python_side().attr("run")(name, py::tuple(args), kwargs);
    std::vector<c10::IValue> returns;
    const auto& rets = schema.returns();
    if (rets.size() == 1) {
      returns.push_back(torch::jit::toIValue(result, rets[0].real_type()));
    } else {
      py::tuple tuple = result.cast<py::tuple>();
      TORCH_CHECK(tuple.size() == rets.size(), "hal: the decomposition of ", name, " returned ", tuple.size(),
                  " values for ", rets.size(), " returns");
      for (size_t i = 0; i < rets.size(); ++i) returns.push_back(torch::jit::toIValue(tuple[i], rets[i].real_type()));
    }
    stack->erase(stack->begin() + static_cast<std::ptrdiff_t>(first), stack->end());
    for (c10::IValue& v : returns) stack->push_back(std::move(v));
    return true;
  } catch (py::error_already_set& e) {
    // The decomposition's own error (a bad argument, as the op would raise): surface it as the op's.
    const std::string what = e.what();
    TORCH_CHECK(false, "hal: ", name, " (run as its decomposition on ", describe(target), "): ", what);
  }
}

void reset_decomposition_plans() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_plans.clear();
}

}  // namespace hal::bridge
