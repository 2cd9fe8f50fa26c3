// hal._torch_C: the Python face of the torch bridge. Bindings only; the logic lives in backend.cpp and
// kernels.cpp. Loaded by hal.torch after `import torch`.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/utils/device_lazy_init.h>

#include "bridge.h"

namespace py = pybind11;
using namespace hal::bridge;

PYBIND11_MODULE(_torch_C, m) {
  m.doc() = "HAL's torch backend (PrivateUse1 renamed 'hal'); use it through hal.torch / torch.hal.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });

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
  m.def("_set_device", [](int index) { set_current_device(static_cast<c10::DeviceIndex>(index)); });
  m.def("_exchange_device", [](int index) {
    int old = current_device();
    if (index >= 0 && index != old) set_current_device(static_cast<c10::DeviceIndex>(index));
    return old;
  });
  m.def("_in_bad_fork", [] { return in_bad_fork(); });
  m.def("_lazy_init", [] {
    check_not_forked();
    torch::utils::register_fork_handler_for_device_init(c10::DeviceType::PrivateUse1);
    return device_count();
  });
  m.def("_synchronize", [](int index) {
    py::gil_scoped_release release;
    translate("synchronize", [&] { device(static_cast<c10::DeviceIndex>(index)).synchronize(); });
  });
  m.def("_default_generator", [](int index) {
    const at::Generator& gen = default_generator(static_cast<c10::DeviceIndex>(index));
    return py::reinterpret_steal<py::object>(THPGenerator_initDefaultGenerator(gen));
  });
  m.def("_device_info", [](int index) {
    hal::Device& d = device(static_cast<c10::DeviceIndex>(index));
    return py::make_tuple(d.name(), d.plugin().name(), d.local_index(), d.properties().relative_speed,
                          host_reachable(d));
  });
  // The calling thread's current stream, by (torch index, stream id): torch.hal and hal.current_stream share it.
  m.def("_current_stream_id", [](int index) { return current_stream(static_cast<c10::DeviceIndex>(index)).id(); },
        py::arg("index"));
  m.def(
      "_exchange_stream_id",
      [](int index, int64_t id) { return exchange_stream(stream_of(static_cast<c10::DeviceIndex>(index), id)).id(); },
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
}
