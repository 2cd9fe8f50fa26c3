// HAL plugin ABI: status codes and the error model.
//
// Every ABI entry returns a hal_status_t. HAL_STATUS_OK (zero) is success; any other value is a failure
// whose human-readable message, and the plugin's own native error code, can be read back with the
// plugin's get_last_error entry (see plugin.h) on the same thread, until that thread makes its next call
// into the plugin. Plugins keep the message in thread-local storage, so reading it is thread-safe.
//
// Errors that happen asynchronously (inside work queued on a stream) are sticky on that stream: they are
// returned by the next stream_synchronize / stream_query / event_synchronize that observes the work, with
// HAL_STATUS_DEVICE_ERROR (or HAL_STATUS_TIMEOUT / HAL_STATUS_ABORTED for collectives) and a message that
// says which queued operation failed.
#ifndef HAL_STATUS_H_
#define HAL_STATUS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hal_status_e {
  HAL_STATUS_OK = 0,
  // The queried work has not completed yet. Returned by the *_query entries (not a failure there) and by
  // event_elapsed_time on an event that has not completed.
  HAL_STATUS_NOT_READY = 1,
  // An argument is invalid: a null pointer, an unknown device index, a size of zero where one is needed,
  // a pointer the plugin did not allocate, a struct_size smaller than the oldest layout the plugin knows.
  HAL_STATUS_INVALID_ARGUMENT = 2,
  // The device (or pinned host memory) cannot satisfy an allocation.
  HAL_STATUS_OUT_OF_MEMORY = 3,
  // The entry exists but this plugin or device does not implement it (the `null` plugin answers this
  // everywhere). Entries that are optional are instead left NULL in the table.
  HAL_STATUS_UNIMPLEMENTED = 4,
  // The device or its driver failed. The message carries the vendor's error name and code.
  HAL_STATUS_DEVICE_ERROR = 5,
  // A blocking operation (a collective, a synchronize with a deadline) ran past its timeout.
  HAL_STATUS_TIMEOUT = 6,
  // The operation was cancelled, e.g. by comm_abort.
  HAL_STATUS_ABORTED = 7,
  // The plugin or device is not initialized, or was shut down.
  HAL_STATUS_UNAVAILABLE = 8,
  // A bug in the plugin: an invariant it checks failed.
  HAL_STATUS_INTERNAL = 9,
} hal_status_e;

// Stored as a fixed-width integer so the ABI does not depend on the compiler's enum size.
typedef int32_t hal_status_t;

// A short constant name for a status ("HAL_STATUS_OUT_OF_MEMORY"), for messages. Header-only so that
// plugins and the runtime agree without linking anything.
static inline const char* hal_status_name(hal_status_t status) {
  switch (status) {
    case HAL_STATUS_OK: return "HAL_STATUS_OK";
    case HAL_STATUS_NOT_READY: return "HAL_STATUS_NOT_READY";
    case HAL_STATUS_INVALID_ARGUMENT: return "HAL_STATUS_INVALID_ARGUMENT";
    case HAL_STATUS_OUT_OF_MEMORY: return "HAL_STATUS_OUT_OF_MEMORY";
    case HAL_STATUS_UNIMPLEMENTED: return "HAL_STATUS_UNIMPLEMENTED";
    case HAL_STATUS_DEVICE_ERROR: return "HAL_STATUS_DEVICE_ERROR";
    case HAL_STATUS_TIMEOUT: return "HAL_STATUS_TIMEOUT";
    case HAL_STATUS_ABORTED: return "HAL_STATUS_ABORTED";
    case HAL_STATUS_UNAVAILABLE: return "HAL_STATUS_UNAVAILABLE";
    case HAL_STATUS_INTERNAL: return "HAL_STATUS_INTERNAL";
    default: return "HAL_STATUS_<unknown>";
  }
}

// Reads back the failure of the calling thread's most recent call into this plugin.
//
// Copies at most |capacity| bytes of the NUL-terminated message into |buffer| (always NUL-terminated when
// |capacity| > 0; |buffer| may be NULL when |capacity| is 0) and returns the message's full length without
// the NUL, so a caller can size a second call. Writes the plugin's native error code (e.g. a CUresult) to
// |out_native_code| when it is not NULL, or 0 when there is none. After a successful call the message is
// empty. Thread-safe; never blocks; never fails.
typedef size_t (*hal_get_last_error_fn)(char* buffer, size_t capacity, int32_t* out_native_code);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_STATUS_H_
