// The GIL release of hal._C, shared with hal._torch_C.
//
// A thread that releases the GIL around a blocking call and comes back while the interpreter exits must not
// take it again: Python 3.11 ends such a thread with pthread_exit inside PyEval_RestoreThread, and that
// forced unwind through C++ frames aborts the process. hal._C's exit hook coordinates every such thread (it
// counts them, waits until each has either taken the GIL back or parked, and parks late comers); hal._C
// owns that state and hands hal._torch_C the two functions below through a capsule, so both modules' waits
// take part in the same exit.
#ifndef HAL_PYTHON_GIL_RELEASE_H_
#define HAL_PYTHON_GIL_RELEASE_H_

#include <Python.h>

#include <atomic>

namespace hal::python {

inline constexpr const char* kGilReleaseCapsule = "hal._C._gil_release_api";

struct GilReleaseApi {
  int version;              // 1
  void* (*release)();       // Releases the GIL; returns the handle for restore.
  void (*restore)(void*);   // Takes the GIL back (or parks forever when the process is exiting).
};

// hal._C's table, once a module calls load_shared_gil_release (at its import, with the GIL held).
inline std::atomic<const GilReleaseApi*>& shared_gil_release_api() {
  static std::atomic<const GilReleaseApi*> api{nullptr};
  return api;
}

// A scope with the GIL released through hal._C's API, or plainly where it was not loaded.
class SharedGilRelease {
 public:
  SharedGilRelease() {
    api_ = shared_gil_release_api().load(std::memory_order_acquire);
    if (api_ != nullptr) {
      handle_ = api_->release();
    } else {
      state_ = PyEval_SaveThread();
    }
  }
  ~SharedGilRelease() noexcept(false) {  // noexcept(false): see GilRelease in module.cpp.
    if (api_ != nullptr) {
      api_->restore(handle_);
    } else {
      PyEval_RestoreThread(state_);
    }
  }
  SharedGilRelease(const SharedGilRelease&) = delete;
  SharedGilRelease& operator=(const SharedGilRelease&) = delete;

  // Imports hal._C and takes its table; call with the GIL held (a module's init). False where it cannot.
  static bool load_shared() {
    const GilReleaseApi* api = load();
    shared_gil_release_api().store(api, std::memory_order_release);
    return api != nullptr;
  }

 private:
  static const GilReleaseApi* load() {
    PyObject* module = PyImport_ImportModule("hal._C");
    if (module == nullptr) {
      PyErr_Clear();
      return nullptr;
    }
    PyObject* capsule = PyObject_GetAttrString(module, "_gil_release_api");
    Py_DECREF(module);
    if (capsule == nullptr) {
      PyErr_Clear();
      return nullptr;
    }
    auto* api = static_cast<const GilReleaseApi*>(PyCapsule_GetPointer(capsule, kGilReleaseCapsule));
    Py_DECREF(capsule);  // hal._C keeps the capsule (and the table it points to) for the life of the process.
    if (api == nullptr) PyErr_Clear();
    return api != nullptr && api->version == 1 ? api : nullptr;
  }
  const GilReleaseApi* api_ = nullptr;
  void* handle_ = nullptr;
  PyThreadState* state_ = nullptr;
};

}  // namespace hal::python

#endif  // HAL_PYTHON_GIL_RELEASE_H_
