// hal._torch_C: the Python face of the torch bridge. Bindings only; the logic lives in the files bridge.h lists.
// Loaded by hal.torch after `import torch`.
#include <ATen/Context.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/Generator.h>

#include "decompositions.h"
#include "fallback.h"
#include "operators.h"
#include "generator.h"
#include "hooks.h"
#include "runtime_access.h"
#include "streams.h"
#include "python/gil_release.h"
#include "python/interrupt.h"

namespace py = pybind11;
using namespace hal::bridge;

namespace {

c10::DeviceIndex to_index(int index) { return static_cast<c10::DeviceIndex>(index); }

}  // namespace

PYBIND11_MODULE(_torch_C, m) {
  m.doc() = "HAL's torch backend (PrivateUse1 renamed 'hal'); use it through hal.torch / torch.hal.";
  hal::python::SharedGilRelease::load_shared();  // hal._C's exit-aware GIL release (gil_release.h).

  // torch's own translation: c10::Error -> RuntimeError, c10::OutOfMemoryError -> torch.OutOfMemoryError, ...
  py::register_exception_translator([](std::exception_ptr p) { torch::translate_exception_to_python(p); });

  register_backend();

  m.def(
      "_set_default_runtime_options",
      [](std::vector<std::string> plugin_paths, std::vector<std::string> plugin_dirs, bool use_env,
         std::map<std::string, std::string> configs) {
        hal::RuntimeOptions o;
        o.plugin_paths = std::move(plugin_paths);
        o.plugin_dirs = std::move(plugin_dirs);
        o.use_env = use_env;
        o.configs = std::move(configs);
        set_default_runtime_options(o);
      },
      py::arg("plugin_paths"), py::arg("plugin_dirs"), py::arg("use_env"), py::arg("configs"));
  m.def("_device_count", [] { return device_count(); });
  m.def("_current_device", [] { return int(current_device()); });
  m.def("_set_device", [](int index) { set_current_device(to_index(index)); });
  m.def("_exchange_device", [](int index) { return int(exchange_device(to_index(index))); });
  m.def("_in_bad_fork", [] { return in_bad_fork(); });
  m.def("_lazy_init", [] {
    check_not_forked();
    return device_count();
  });
  // torch.hal.synchronize: on the main thread Ctrl-C interrupts the wait (the work stays queued), as in hal._C.
  m.def("_synchronize", [](int index) {
    const hal::StopPredicate should_stop = hal::python::signal_stop_predicate();
    bool done;
    {
      hal::python::SharedGilRelease release;  // Parks at exit instead of aborting (gil_release.h).
      done = translate("synchronize", [&] { return device(to_index(index)).synchronize(should_stop); });
    }
    if (!done) throw py::error_already_set();
  });
  m.def("_default_generator", [](int index) {
    const at::Generator& gen = default_generator(to_index(index));
    return py::reinterpret_steal<py::object>(THPGenerator_initDefaultGenerator(gen));
  });
  m.def("_device_info", [](int index) {
    hal::Device& d = device(to_index(index));
    return py::make_tuple(d.name(), d.plugin().name(), d.local_index(), d.properties().relative_speed,
                          host_reachable(d));
  });
  // The calling thread's current stream, by (torch index, stream id): torch.hal and hal.current_stream share it.
  m.def("_current_stream_id", [](int index) { return current_stream(to_index(index)).id(); }, py::arg("index"));
  m.def(
      "_exchange_stream_id",
      [](int index, int64_t id) { return exchange_stream(stream_of(to_index(index), id)).id(); },
      py::arg("index"), py::arg("stream_id"));
  // torch's getDeviceFromPtr (what at::from_blob asks) for a hal pointer; tests use it.
  m.def(
      "_device_from_ptr",
      [](uintptr_t ptr) {
        return int(at::globalContext().getDeviceFromPtr(reinterpret_cast<void*>(ptr), c10::DeviceType::PrivateUse1).index());
      },
      py::arg("ptr"));
  m.def("_fallback_stats", [] { return fallback_stats(); });
  m.def("_reset_fallback_stats", [] { reset_fallback_stats(); });
  m.def("_set_fallback_blocklist", [](std::vector<std::string> names) { set_fallback_blocklist(names); });
  m.def("_fallback_blocklist", [] { return fallback_blocklist(); });
  // name -> {"native"|"decomposed"|"fallback": (calls, seconds), "declined": n}
  m.def("_op_stats", [] {
    py::dict out;
    for (const auto& [name, s] : op_stats()) {
      py::dict d;
      d["native"] = py::make_tuple(s.native.calls, s.native.ns * 1e-9);
      d["decomposed"] = py::make_tuple(s.decomposed.calls, s.decomposed.ns * 1e-9);
      d["fallback"] = py::make_tuple(s.fallback.calls, s.fallback.ns * 1e-9, s.fallback.waited_ns * 1e-9);
      d["declined"] = s.declined;
      out[py::str(name)] = d;
    }
    return out;
  });
  m.def("_reset_op_stats", [] { reset_op_stats(); });
  m.def("_reset_decomposition_plans", [] { reset_decomposition_plans(); });
  // The operators a device's plugin implements (kernel.h): [(name, [dtype names])].
  m.def("_device_operators", [](int index) {
    hal::Device& d = device(to_index(index));
    std::vector<std::pair<std::string, std::vector<std::string>>> out;
    for (const hal::OperatorInfo& op : translate("op_list", [&]() -> const hal::OperatorTable& { return d.operators(); }).all()) {
      std::vector<std::string> dtypes;
      for (hal_dtype_t t = 0; t < HAL_DTYPE_END; ++t) {
        if (op.dtypes & HAL_DTYPE_BIT(t)) dtypes.push_back(hal::dtype_name(t));
      }
      out.emplace_back(op.name, std::move(dtypes));
    }
    return out;
  });
}
