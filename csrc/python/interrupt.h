// The stop predicate that makes a runtime wait interruptible from Python (Ctrl-C), shared by the two Python
// modules that wait with the GIL released: hal._C (csrc/python/module.cpp) and hal._torch_C (csrc/torch).
#pragma once

#include <pybind11/pybind11.h>

#include "runtime/wait.h"

namespace hal::python {

// Call with the GIL held, before releasing it. On the main thread (the only one where Python runs signal
// handlers) the predicate runs the handlers and stops the wait when one raised, leaving that error set for
// the binding to throw as py::error_already_set; on other threads there is none (the wait cannot stop).
inline StopPredicate signal_stop_predicate() {
  static const unsigned long main_thread =
      pybind11::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  if (PyThread_get_thread_ident() != main_thread) return nullptr;
  return [] {
    pybind11::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  };
}

}  // namespace hal::python
