// hal._C: pybind11 bindings of the C++ runtime (csrc/runtime/). Bindings hold no logic: they convert
// arguments, release the GIL around calls that may block, and forward. hal/_C.pyi documents the surface.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "python/gil_release.h"
#include "python/interrupt.h"
#include "runtime/allocator.h"
#include "runtime/communicator.h"
#include "runtime/compute.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/plugin.h"
#include "runtime/registry.h"
#include "runtime/stream.h"
#include "runtime/topology.h"
#include "runtime/validation.h"
#include "runtime/wait.h"

namespace py = pybind11;

namespace {

// Whether the interpreter is exiting: a plugin thread must then not take the GIL (Python would end that
// thread in the middle of the plugin's code) and leaves Python objects alone.
bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

// Set by the exit hook (shutdown_at_exit, an atexit function: it runs before the interpreter starts to
// finalize), with the id of the thread that runs it.
std::atomic<bool> g_exiting{false};
std::atomic<unsigned long> g_exit_thread{0};
// Threads inside a GilRelease scope (the GIL released) and, of those, the ones parked at exit.
std::atomic<int> g_released{0};
std::atomic<int> g_parked{0};

// Releases the GIL around a blocking call, as py::gil_scoped_release does, except at exit. Python 3.11 ends a
// daemon thread that takes the GIL once finalization has begun with pthread_exit inside PyEval_RestoreThread,
// and that forced unwind through the binding's C++ frames aborts the process ("terminate called without an
// active exception"). So a thread coming back once the process is exiting waits there for the process to end
// instead: from the exit hook on (which waits until every released thread has either taken the GIL back or
// parked here, so that none is still on its way to take_gil when finalization starts), and during
// finalization itself. The thread that runs the exit hook and finalization never parks. The destructor is
// noexcept(false) so that a forced unwind that still happens ends the thread rather than the process.
class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) { g_released.fetch_add(1); }
  ~GilRelease() noexcept(false) {
    if (g_exiting.load() && PyThread_get_thread_ident() != g_exit_thread.load()) park();
    while (finalizing() && PyThread_get_thread_ident() != g_exit_thread.load()) pause();
    PyEval_RestoreThread(state_);
    g_released.fetch_sub(1);
  }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  [[noreturn]] static void park() {
    g_parked.fetch_add(1);
    for (;;) pause();
  }
  PyThreadState* state_;
};

using release_gil = py::call_guard<GilRelease>;

// GilRelease for hal._torch_C (gil_release.h), through the capsule _gil_release_api.
void* shared_release() { return new GilRelease(); }
void shared_restore(void* release) { delete static_cast<GilRelease*>(release); }
const hal::python::GilReleaseApi g_gil_release_api = {1, shared_release, shared_restore};

// Python callbacks of launch_host_func running on a stream's thread now. At exit they are waited for (with the
// GIL released, bounded) before the runtime shuts down: a callback still inside Python when finalization starts
// would have its thread ended by the interpreter in the middle of the plugin's code.
std::atomic<int> g_host_funcs_running{0};
constexpr auto kHostFuncExitWait = std::chrono::seconds(10);
constexpr auto kReleasedExitWait = std::chrono::seconds(2);

void shutdown_at_exit() {
  g_exit_thread.store(PyThread_get_thread_ident());
  g_exiting.store(true);
  GilRelease release;
  const auto until = [](auto deadline, auto busy) {
    while (busy() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  until(std::chrono::steady_clock::now() + kHostFuncExitWait, [] { return g_host_funcs_running.load() > 0; });
  hal::Runtime::shutdown();  // Waits of other threads end now (with an error), and they come back.
  // Every other thread with the GIL released either takes it back (it was past the check: it goes on in
  // Python, which ends it at its next switch once finalizing) or parks; this scope's own release counts as one.
  // Bounded: a thread inside a plugin's call that does not return is left as it is.
  until(std::chrono::steady_clock::now() + kReleasedExitWait,
        [] { return g_released.load() - g_parked.load() > 1; });
}

// Python exception types, created once and kept for the life of the process.
struct ExceptionTypes {
  PyObject* base;
  PyObject* plugin_load;
  PyObject* unimplemented;
  PyObject* out_of_memory;
  PyObject* invalid_argument;
  PyObject* device_error;
  PyObject* timeout;
  PyObject* aborted;
};
ExceptionTypes g_types;

PyObject* new_exception(py::module_& m, const char* name, PyObject* bases) {
  std::string qualified = std::string("hal._C.") + name;
  PyObject* type = PyErr_NewException(qualified.c_str(), bases, nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type));  // add_object steals nothing; the type is kept alive by the module.
  Py_INCREF(type);
  return type;
}

PyObject* exception_type(const hal::Error& e) {
  if (dynamic_cast<const hal::PluginLoadError*>(&e)) return g_types.plugin_load;
  switch (e.code()) {
    case HAL_STATUS_UNIMPLEMENTED: return g_types.unimplemented;
    case HAL_STATUS_OUT_OF_MEMORY: return g_types.out_of_memory;
    case HAL_STATUS_INVALID_ARGUMENT: return g_types.invalid_argument;
    case HAL_STATUS_DEVICE_ERROR:
    case HAL_STATUS_UNAVAILABLE:
    case HAL_STATUS_INTERNAL: return g_types.device_error;
    case HAL_STATUS_TIMEOUT: return g_types.timeout;
    case HAL_STATUS_ABORTED: return g_types.aborted;
    default: return g_types.base;
  }
}

void raise(const hal::Error& e) {
  py::handle type(exception_type(e));
  py::object exc = type(e.what());
  exc.attr("code") = hal_status_name(e.code());
  exc.attr("plugin") = e.plugin();
  exc.attr("device") = e.device();
  exc.attr("native_code") = e.native_code();
  PyErr_SetObject(type.ptr(), exc.ptr());
}

// A Python buffer held for the duration of one call: C-contiguous, writable when asked.
class BufferView {
 public:
  BufferView(py::handle object, bool writable) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object.ptr(), &view_, flags) != 0) throw py::error_already_set();
  }
  ~BufferView() { PyBuffer_Release(&view_); }
  void* data() const { return view_.buf; }
  // |nbytes| if given (checked against the buffer), else the whole buffer.
  size_t size(std::optional<size_t> nbytes) const {
    const size_t length = static_cast<size_t>(view_.len);
    if (nbytes && *nbytes > length) {
      throw hal::Error(HAL_STATUS_INVALID_ARGUMENT, "nbytes " + std::to_string(*nbytes) +
                                                        " exceeds the buffer's " + std::to_string(length) + " bytes");
    }
    return nbytes ? *nbytes : length;
  }

 private:
  Py_buffer view_;
};

void* as_ptr(uintptr_t address) { return reinterpret_cast<void*>(address); }
uintptr_t as_int(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr); }

// Runs |wait|(should_stop) with the GIL released, interruptible by signals on the main thread (only there
// do handlers run, so other threads wait without a predicate); throws the error of a handler that raised.
template <typename Wait>
void wait_interruptibly(Wait wait) {
  const hal::StopPredicate should_stop = hal::python::signal_stop_predicate();
  bool done;
  {
    GilRelease release;
    done = wait(should_stop);
  }
  if (!done) throw py::error_already_set();
}

// Deletes a Communicator from Python (garbage collection): destroy() waits for queued collectives, which
// must not wait for the GIL; at interpreter exit the GIL stays, as GilRelease would never return it.
struct CommunicatorDelete {
  void operator()(hal::Communicator* comm) const {
    if (finalizing() || !PyGILState_Check()) {
      delete comm;
      return;
    }
    GilRelease release;
    delete comm;
  }
};

py::dict entries_dict(const hal::PluginInspection& info) {
  py::dict entries;
  for (const auto& [name, present] : info.entries) entries[py::str(name)] = present;
  return entries;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "HAL runtime bindings (private; use the hal package). See hal/_C.pyi.";
  m.attr("ABI_VERSION") = py::make_tuple(HAL_ABI_VERSION_MAJOR, HAL_ABI_VERSION_MINOR);

  // --- Exceptions ---
  g_types.base = new_exception(m, "HalError", PyExc_RuntimeError);
  auto with = [](PyObject* a, PyObject* b) { return py::make_tuple(py::handle(a), py::handle(b)).release().ptr(); };
  g_types.plugin_load = new_exception(m, "PluginLoadError", g_types.base);
  g_types.unimplemented = new_exception(m, "Unimplemented", g_types.base);
  g_types.out_of_memory = new_exception(m, "OutOfMemory", with(g_types.base, PyExc_MemoryError));
  g_types.invalid_argument = new_exception(m, "InvalidArgument", with(g_types.base, PyExc_ValueError));
  g_types.device_error = new_exception(m, "DeviceError", g_types.base);
  g_types.timeout = new_exception(m, "Timeout", with(g_types.base, PyExc_TimeoutError));
  g_types.aborted = new_exception(m, "Aborted", g_types.base);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const hal::Error& e) {
      raise(e);
    }
  });

  // --- Runtime ---
  m.def(
      "init",
      [](std::vector<std::string> plugin_paths, std::vector<std::string> plugin_dirs, bool use_env,
         std::map<std::string, std::string> configs) {
        hal::RuntimeOptions options{std::move(plugin_paths), std::move(plugin_dirs), use_env, std::move(configs)};
        GilRelease release;
        hal::Runtime::init(options);
      },
      py::arg("plugin_paths") = std::vector<std::string>{}, py::arg("plugin_dirs") = std::vector<std::string>{},
      py::arg("use_env") = true, py::arg("configs") = std::map<std::string, std::string>{});
  m.def("is_initialized", &hal::Runtime::is_initialized);
  m.def("_shutdown", &shutdown_at_exit);
  py::module_::import("atexit").attr("register")(m.attr("_shutdown"));
  m.attr("_gil_release_api") = py::capsule(const_cast<hal::python::GilReleaseApi*>(&g_gil_release_api),
                                            hal::python::kGilReleaseCapsule);
  m.def("_keep_until_exit", [](py::object obj) { obj.inc_ref(); }, py::arg("obj"));
  m.def("plugin_entries", [] {
    std::vector<std::pair<std::string, bool>> entries;
    for (const hal::PluginEntry& e : hal::plugin_entries()) entries.emplace_back(e.name, e.required);
    return entries;
  });

  py::class_<hal::PluginInspection>(m, "PluginInfo")
      .def_readonly("name", &hal::PluginInspection::name)
      .def_readonly("path", &hal::PluginInspection::path)
      .def_readonly("version", &hal::PluginInspection::version)
      .def_readonly("abi_major", &hal::PluginInspection::abi_major)
      .def_readonly("abi_minor", &hal::PluginInspection::abi_minor)
      .def_readonly("device_count", &hal::PluginInspection::device_count)
      .def_readonly("extensions", &hal::PluginInspection::extensions)
      .def_property_readonly("entries", &entries_dict)
      .def_readonly("error", &hal::PluginInspection::error)
      .def("__repr__", [](const hal::PluginInspection& i) {
        return "<PluginInfo " + i.name + " " + i.version + " at " + i.path + (i.error ? " (refused)>" : ">");
      });

  m.def("plugins", [] {
    std::vector<hal::PluginInspection> infos;
    for (const hal::Plugin* plugin : hal::Runtime::get().plugins()) infos.push_back(plugin->info());
    return infos;
  });
  m.def("load_errors", [] {
    std::vector<std::pair<std::string, std::string>> errors;
    for (const hal::LoadError& e : hal::Runtime::get().load_errors()) errors.emplace_back(e.path, e.message);
    return errors;
  });
  m.def("inspect_plugin", &hal::inspect_plugin, py::arg("path"), release_gil());
  m.def("validation_enabled", &hal::validation::enabled);
  m.def("validation_report", [] {
    py::list reports;
    for (const hal::validation::Report& r : hal::Runtime::get().validation_reports()) {
      py::dict d;
      d["plugin"] = r.plugin;
      d["calls"] = r.calls;
      d["violations"] = r.violations;
      d["first_violation"] = r.first_violation;
      d["leaks"] = r.leaks;
      d["leaked_bytes"] = r.leaked_bytes;
      d["live"] = r.live;
      d["text"] = hal::validation::format(r);
      reports.append(d);
    }
    return reports;
  });
  m.def("device_count", [] {
    hal::Runtime* runtime = hal::Runtime::instance();
    return runtime ? runtime->device_count() : 0;
  });
  m.def("get_device", [](int index) { return &hal::Runtime::get().device(index); }, py::arg("index"),
        py::return_value_policy::reference);
  m.def("find_device", [](const std::string& name) { return &hal::Runtime::get().find_device(name); },
        py::arg("name"), py::return_value_policy::reference);

  py::class_<hal::Link>(m, "Link")
      .def_readonly("peer", &hal::Link::peer)
      .def_readonly("peer_index", &hal::Link::peer_index)
      .def_readonly("kind", &hal::Link::kind)
      .def_readonly("peer_access", &hal::Link::peer_access)
      .def_readonly("bandwidth", &hal::Link::bandwidth)
      .def_readonly("latency", &hal::Link::latency);

  // --- Devices ---
  py::class_<hal::DeviceProperties>(m, "DeviceProperties")
      .def_readonly("name", &hal::DeviceProperties::name)
      .def_readonly("vendor", &hal::DeviceProperties::vendor)
      .def_readonly("kind", &hal::DeviceProperties::kind)
      .def_readonly("flags", &hal::DeviceProperties::flags)
      .def_readonly("host_addressable", &hal::DeviceProperties::host_addressable)
      .def_readonly("emulated", &hal::DeviceProperties::emulated)
      .def_readonly("mappable", &hal::DeviceProperties::mappable)
      .def_readonly("total_memory", &hal::DeviceProperties::total_memory)
      .def_property_readonly("peak_flops",
                             [](const hal::DeviceProperties& p) {
                               py::dict flops;
                               for (const auto& [dtype, value] : p.peak_flops) flops[py::str(dtype)] = value;
                               return flops;
                             })
      .def_readonly("memory_bandwidth", &hal::DeviceProperties::memory_bandwidth)
      .def_readonly("link_bandwidth", &hal::DeviceProperties::link_bandwidth)
      .def_readonly("host_link_bandwidth", &hal::DeviceProperties::host_link_bandwidth)
      .def_readonly("relative_speed", &hal::DeviceProperties::relative_speed);

  py::class_<hal::Device, std::unique_ptr<hal::Device, py::nodelete>>(m, "Device")
      .def_property_readonly("index", &hal::Device::index)
      .def_property_readonly("name", &hal::Device::name)
      .def_property_readonly("plugin", [](const hal::Device& d) { return d.plugin().name(); })
      .def_property_readonly("plugin_path", [](const hal::Device& d) { return d.plugin().path(); })
      .def_property_readonly("local_index", &hal::Device::local_index)
      .def("properties", &hal::Device::properties, py::return_value_policy::copy)
      // The operators the device's plugin implements (kernel.h): [(name, [dtype names])].
      .def("operators",
           [](hal::Device& d) {
             std::vector<std::pair<std::string, std::vector<std::string>>> out;
             for (const hal::OperatorInfo& op : d.operators().all()) {
               std::vector<std::string> dtypes;
               for (hal_dtype_t t = 0; t < HAL_DTYPE_END; ++t) {
                 if (op.dtypes & HAL_DTYPE_BIT(t)) dtypes.push_back(hal::dtype_name(t));
               }
               out.emplace_back(op.name, std::move(dtypes));
             }
             return out;
           })
      .def("memory_info", &hal::Device::memory_info)
      .def("links", [](const hal::Device& d) { return hal::device_links(d); })
      .def("extensions", [](const hal::Device& d) { return d.plugin().info().extensions; })
      .def("supports", &hal::Device::supports, py::arg("entry"))
      .def("default_stream", &hal::Device::default_stream)
      .def("current_stream", &hal::Device::current_stream)
      .def("exchange_current_stream", &hal::Device::exchange_current_stream, py::arg("stream"))
      .def("stream", &hal::Device::stream, py::arg("handle"))
      .def("synchronize",
           [](hal::Device& d) {
             wait_interruptibly([&](const hal::StopPredicate& stop) { return d.synchronize(stop); });
           })
      .def(
          "allocate",
          [](hal::Device& d, size_t nbytes, std::optional<hal::Stream> stream) {
            GilRelease release;
            return std::make_unique<hal::Allocation>(d, nbytes, stream ? *stream : d.default_stream());
          },
          py::arg("nbytes"), py::arg("stream") = py::none())
      .def("memory_stats",
           [](hal::Device& d) {
             py::dict stats;
             for (const auto& [name, value] : d.allocator().stats().items()) stats[name] = value;
             return stats;
           })
      .def("reset_peak_memory_stats", [](hal::Device& d) { d.allocator().reset_peak_stats(); })
      .def("reset_accumulated_memory_stats", [](hal::Device& d) { d.allocator().reset_accumulated_stats(); })
      .def("find_allocation",
           [](hal::Device& d, uintptr_t ptr) -> std::optional<std::pair<uintptr_t, size_t>> {
             auto [start, size] = d.allocator().find_allocation(as_ptr(ptr));
             if (start == nullptr) return std::nullopt;
             return std::make_pair(as_int(start), size);
           },
           py::arg("ptr"))
      .def("empty_cache", [](hal::Device& d) { d.allocator().empty_cache(); }, release_gil())
      .def("raw_allocate", [](hal::Device& d, size_t nbytes) { return as_int(d.allocator().raw_allocate(nbytes)); },
           py::arg("nbytes"), release_gil())
      .def("raw_free", [](hal::Device& d, uintptr_t ptr) { d.allocator().raw_free(as_ptr(ptr)); }, py::arg("ptr"),
           release_gil())
      // Test hook of the validation layer (tests/test_validation.py): calls one plugin entry with raw handles,
      // past the runtime's own bookkeeping, to plant misuse the runtime never makes. Returns the new handle of
      // a create entry, else 0. |local| overrides the device's local index (entries that take a device).
      .def(
          "_raw_call",
          [](hal::Device& d, const std::string& entry, std::vector<uintptr_t> args, std::optional<int32_t> local) {
            const hal::Plugin& p = d.plugin();
            const hal_plugin_api_t& api = p.api();
            const int32_t index = local ? *local : d.local_index();
            const auto arg = [&](size_t i) {
              if (i >= args.size()) throw hal::Error(HAL_STATUS_INVALID_ARGUMENT, entry + ": too few arguments");
              return as_ptr(args[i]);
            };
            uintptr_t out = 0;
            hal_status_t status;
            if (entry == "stream_create") {
              hal_stream_t s = nullptr;
              status = api.stream_create(index, &s);
              out = as_int(s);
            } else if (entry == "event_create") {
              hal_event_t e = nullptr;
              status = api.event_create(index, 0, &e);
              out = as_int(e);
            } else if (entry == "stream_destroy") {
              status = api.stream_destroy(static_cast<hal_stream_t>(arg(0)));
            } else if (entry == "stream_synchronize") {
              status = api.stream_synchronize(static_cast<hal_stream_t>(arg(0)));
            } else if (entry == "event_destroy") {
              status = api.event_destroy(static_cast<hal_event_t>(arg(0)));
            } else if (entry == "event_record") {
              status = api.event_record(static_cast<hal_event_t>(arg(0)), static_cast<hal_stream_t>(arg(1)));
            } else if (entry == "memory_allocate") {
              void* ptr = nullptr;
              status = api.memory_allocate(index, args.empty() ? 0 : args[0], &ptr);
              out = as_int(ptr);
            } else if (entry == "memory_free") {
              status = api.memory_free(index, arg(0));
            } else {
              throw hal::Error(HAL_STATUS_INVALID_ARGUMENT, "_raw_call: unknown entry " + entry);
            }
            p.check(status, entry.c_str(), d.name());
            return out;
          },
          py::arg("entry"), py::arg("args") = std::vector<uintptr_t>{}, py::arg("local") = py::none(), release_gil())
      .def("map", [](hal::Device& d, uintptr_t ptr, size_t nbytes) { return as_int(d.map(as_ptr(ptr), nbytes)); },
           py::arg("ptr"), py::arg("nbytes"))
      .def("unmap", [](hal::Device& d, uintptr_t host_ptr, size_t nbytes) { d.unmap(as_ptr(host_ptr), nbytes); },
           py::arg("host_ptr"), py::arg("nbytes"))
      .def("__repr__", [](const hal::Device& d) { return "<hal._C.Device " + d.name() + ">"; });

  py::class_<hal::Allocation>(m, "Allocation")
      .def_property_readonly("ptr", [](const hal::Allocation& a) { return as_int(a.ptr()); })
      .def_property_readonly("nbytes", &hal::Allocation::nbytes)
      .def_property_readonly("freed", &hal::Allocation::freed)
      .def_property_readonly("device", &hal::Allocation::device, py::return_value_policy::reference)
      .def_property_readonly("stream", [](const hal::Allocation& a) { return a.stream(); })
      .def("free", &hal::Allocation::free, release_gil())
      .def("record_stream", &hal::Allocation::record_stream, py::arg("stream"));

  // --- Streams and events ---
  py::class_<hal::Stream>(m, "Stream")
      .def(py::init([](hal::Device& d) { return d.create_stream(); }), py::arg("device"))
      .def_property_readonly("device", &hal::Stream::device, py::return_value_policy::reference)
      .def_property_readonly("handle", &hal::Stream::id)
      .def("synchronize",
           [](const hal::Stream& s) {
             wait_interruptibly([&](const hal::StopPredicate& stop) { return s.synchronize(stop); });
           })
      .def("query", &hal::Stream::query)
      .def("wait_event", &hal::Stream::wait_event, py::arg("event"))
      .def(
          "copy_h2d",
          [](const hal::Stream& s, uintptr_t dst, py::buffer src, std::optional<size_t> nbytes) {
            BufferView view(src, /*writable=*/false);
            size_t n = view.size(nbytes);
            GilRelease release;
            s.copy_h2d(as_ptr(dst), view.data(), n);
          },
          py::arg("dst_ptr"), py::arg("src"), py::arg("nbytes") = py::none())
      .def(
          "copy_d2h",
          [](const hal::Stream& s, py::buffer dst, uintptr_t src, std::optional<size_t> nbytes) {
            BufferView view(dst, /*writable=*/true);
            size_t n = view.size(nbytes);
            GilRelease release;
            s.copy_d2h(view.data(), as_ptr(src), n);
          },
          py::arg("dst"), py::arg("src_ptr"), py::arg("nbytes") = py::none())
      .def("copy_d2d",
           [](const hal::Stream& s, uintptr_t dst, uintptr_t src, size_t nbytes) {
             s.copy_d2d(as_ptr(dst), as_ptr(src), nbytes);
           },
           py::arg("dst_ptr"), py::arg("src_ptr"), py::arg("nbytes"), release_gil())
      .def("memset",
           [](const hal::Stream& s, uintptr_t dst, uint8_t value, size_t nbytes) {
             s.memset(as_ptr(dst), value, nbytes);
           },
           py::arg("dst_ptr"), py::arg("value"), py::arg("nbytes"), release_gil())
      .def(
          "launch_host_func",
          [](const hal::Stream& s, py::function fn) {
            // The function object is released with the GIL held, on whichever thread drops it last; once
            // the interpreter is exiting it is left alone (leaked), as is the call.
            std::shared_ptr<py::object> held(new py::object(std::move(fn)), [](py::object* o) {
              if (finalizing()) return;
              py::gil_scoped_acquire gil;
              delete o;
            });
            s.launch_host_func([held] {
              if (finalizing()) return;
              g_host_funcs_running.fetch_add(1);
              struct Done {
                ~Done() { g_host_funcs_running.fetch_sub(1); }
              } done;
              if (finalizing()) return;
              py::gil_scoped_acquire gil;
              try {
                (*held)();
              } catch (py::error_already_set& e) {
                e.discard_as_unraisable("hal._C.Stream.launch_host_func callback");
              }
            });
          },
          py::arg("fn"))
      .def("__eq__", [](const hal::Stream& a, const hal::Stream& b) { return a == b; })
      .def("__hash__", [](const hal::Stream& s) { return std::hash<const void*>()(s.state()); })
      .def("__repr__", [](const hal::Stream& s) {
        return "<hal._C.Stream " + s.device().name() + " #" + std::to_string(s.id()) + ">";
      });

  m.def(
      "copy_peer",
      [](const hal::Stream& dst_stream, uintptr_t dst, const hal::Stream& src_stream, uintptr_t src,
         size_t nbytes) { hal::copy_peer(dst_stream, as_ptr(dst), src_stream, as_ptr(src), nbytes); },
      py::arg("dst_stream"), py::arg("dst_ptr"), py::arg("src_stream"), py::arg("src_ptr"), py::arg("nbytes"),
      release_gil());

  py::class_<hal::Event>(m, "Event")
      .def(py::init<hal::Device&, bool>(), py::arg("device"), py::arg("timing") = true)
      .def_property_readonly("device", &hal::Event::device, py::return_value_policy::reference)
      .def("record", &hal::Event::record, py::arg("stream"))
      .def("synchronize",
           [](const hal::Event& e) {
             wait_interruptibly([&](const hal::StopPredicate& stop) { return e.synchronize(stop); });
           })
      .def("query", &hal::Event::query)
      .def("elapsed_time", &hal::Event::elapsed_ms, py::arg("end"));

  // --- Programs and kernels (compute.h) ---
  py::class_<hal::Program>(m, "Program")
      .def(py::init([](hal::Device& d, const std::string& format, const py::bytes& data, const std::string& options) {
             std::string bytes = data;
             GilRelease release;  // Building may take seconds.
             return hal::Program(d, format, bytes.data(), bytes.size(), options);
           }),
           py::arg("device"), py::arg("format"), py::arg("data"), py::arg("options") = "")
      .def_property_readonly("device", &hal::Program::device, py::return_value_policy::reference)
      .def("kernel", &hal::Program::kernel, py::arg("name"));
  py::class_<hal::Kernel>(m, "Kernel")
      .def_property_readonly("name", &hal::Kernel::name)
      .def_property_readonly("device", &hal::Kernel::device, py::return_value_policy::reference)
      // args: [("buffer", device pointer) | ("bytes", bytes) | ("local", nbytes)]
      .def(
          "launch",
          [](const hal::Kernel& k, const hal::Stream& stream, std::vector<uint64_t> global,
             std::optional<std::vector<uint64_t>> local, const std::vector<std::pair<std::string, py::object>>& args) {
            if (global.empty() || global.size() > 3 || (local && local->size() != global.size())) {
              hal::throw_error(HAL_STATUS_INVALID_ARGUMENT, "kernel launch: global (and local) sizes need 1 to 3 "
                                                            "dimensions, the same number for both");
            }
            global.resize(3, 1);
            if (local) local->resize(3, 1);
            std::vector<std::string> bytes;  // Keeps BYTES values alive during the call.
            bytes.reserve(args.size());
            std::vector<hal_kernel_arg_t> out;
            for (const auto& [kind, value] : args) {
              hal_kernel_arg_t a{};
              if (kind == "buffer") {
                a.kind = HAL_KERNEL_ARG_BUFFER;
                a.value = as_ptr(value.cast<uintptr_t>());
              } else if (kind == "bytes") {
                bytes.push_back(value.cast<std::string>());
                a.kind = HAL_KERNEL_ARG_BYTES;
                a.size = bytes.back().size();
                a.value = bytes.back().data();
              } else if (kind == "local") {
                a.kind = HAL_KERNEL_ARG_LOCAL;
                a.size = value.cast<uint64_t>();
              } else {
                hal::throw_error(HAL_STATUS_INVALID_ARGUMENT, "kernel launch: unknown argument kind '" + kind +
                                                              "' (buffer, bytes or local)");
              }
              out.push_back(a);
            }
            GilRelease release;
            k.launch(stream, global.data(), local ? local->data() : nullptr, out);
          },
          py::arg("stream"), py::arg("global_size"), py::arg("local_size"), py::arg("args"));

  // --- Collectives (communicator.h): device pointers as ints, counts in elements, dtype and op as strings ---
  m.def(
      "comm_unique_id",
      [](hal::Device& d) {
        std::string id;
        {
          GilRelease release;
          id = hal::Communicator::unique_id(d);
        }
        return py::bytes(id);
      },
      py::arg("device"));
  py::class_<hal::Communicator, std::unique_ptr<hal::Communicator, CommunicatorDelete>>(m, "Communicator")
      .def(py::init([](hal::Device& d, int32_t nranks, py::bytes unique_id, int32_t rank, uint32_t timeout_ms) {
             std::string id = unique_id;
             GilRelease release;
             return std::unique_ptr<hal::Communicator, CommunicatorDelete>(
                 new hal::Communicator(d, nranks, id, rank, timeout_ms));
           }),
           py::arg("device"), py::arg("nranks"), py::arg("unique_id"), py::arg("rank"), py::arg("timeout_ms") = 0)
      .def_property_readonly("rank", &hal::Communicator::rank)
      .def_property_readonly("nranks", &hal::Communicator::nranks)
      .def_property_readonly("device", &hal::Communicator::device, py::return_value_policy::reference)
      .def("supports", &hal::Communicator::supports, py::arg("op"))
      .def("allreduce",
           [](hal::Communicator& c, uintptr_t send, uintptr_t recv, uint64_t count, const std::string& dtype,
              const std::string& op, const hal::Stream& stream) {
             c.allreduce(as_ptr(send), as_ptr(recv), count, dtype, op, stream);
           },
           py::arg("send_ptr"), py::arg("recv_ptr"), py::arg("count"), py::arg("dtype"), py::arg("op"),
           py::arg("stream"), release_gil())
      .def("allgather",
           [](hal::Communicator& c, uintptr_t send, uintptr_t recv, uint64_t send_count, const std::string& dtype,
              const hal::Stream& stream) { c.allgather(as_ptr(send), as_ptr(recv), send_count, dtype, stream); },
           py::arg("send_ptr"), py::arg("recv_ptr"), py::arg("send_count"), py::arg("dtype"), py::arg("stream"),
           release_gil())
      .def("reduce_scatter",
           [](hal::Communicator& c, uintptr_t send, uintptr_t recv, uint64_t recv_count, const std::string& dtype,
              const std::string& op, const hal::Stream& stream) {
             c.reduce_scatter(as_ptr(send), as_ptr(recv), recv_count, dtype, op, stream);
           },
           py::arg("send_ptr"), py::arg("recv_ptr"), py::arg("recv_count"), py::arg("dtype"), py::arg("op"),
           py::arg("stream"), release_gil())
      .def("broadcast",
           [](hal::Communicator& c, uintptr_t send, uintptr_t recv, uint64_t count, const std::string& dtype,
              int32_t root, const hal::Stream& stream) {
             c.broadcast(as_ptr(send), as_ptr(recv), count, dtype, root, stream);
           },
           py::arg("send_ptr"), py::arg("recv_ptr"), py::arg("count"), py::arg("dtype"), py::arg("root"),
           py::arg("stream"), release_gil())
      .def("send",
           [](hal::Communicator& c, uintptr_t send, uint64_t count, const std::string& dtype, int32_t peer,
              const hal::Stream& stream) { c.send(as_ptr(send), count, dtype, peer, stream); },
           py::arg("send_ptr"), py::arg("count"), py::arg("dtype"), py::arg("peer"), py::arg("stream"),
           release_gil())
      .def("recv",
           [](hal::Communicator& c, uintptr_t recv, uint64_t count, const std::string& dtype, int32_t peer,
              const hal::Stream& stream) { c.recv(as_ptr(recv), count, dtype, peer, stream); },
           py::arg("recv_ptr"), py::arg("count"), py::arg("dtype"), py::arg("peer"), py::arg("stream"),
           release_gil())
      .def("abort", &hal::Communicator::abort, release_gil())
      .def("destroy", &hal::Communicator::destroy, release_gil())
      .def("__repr__", [](const hal::Communicator& c) {
        return "<hal._C.Communicator " + c.device().name() + " rank " + std::to_string(c.rank()) + " of " +
               std::to_string(c.nranks()) + ">";
      });

  m.def("_bench_alloc_pairs", &hal::bench_alloc_pairs, py::arg("device"), py::arg("nbytes"), py::arg("iters"),
        py::arg("raw") = false, release_gil());
}
