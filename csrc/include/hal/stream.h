// HAL plugin ABI: streams, events and asynchronous copies.
//
// A stream is an in-order queue of work on one device: each operation starts after the previous one on the
// same stream finished. Work on different streams may run concurrently; it is ordered only through events
// (event_record on one stream, stream_wait_event on another). Enqueueing never waits for device work.
//
// Lifetimes: a stream or event belongs to the device it was created on and must be destroyed before the
// plugin shuts down. Destroying a stream with queued work first waits for that work. Destroying an event
// that a stream still waits on is allowed: the wait still completes as if the event were alive.
//
// Errors of queued work: a failure is reported once, by the next stream_synchronize (or stream_query that
// finds the stream idle) and by event_synchronize of the events recorded after it, and is then cleared, so
// the stream can be used again. Work queued after the failure and before that report is skipped, not run.
#ifndef HAL_STREAM_H_
#define HAL_STREAM_H_

#include "hal/memory.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hal_stream_s* hal_stream_t;  // Opaque; owned by whoever created it.
typedef struct hal_event_s* hal_event_t;    // Opaque; owned by whoever created it.

// Bits for event_create's |flags|.
enum {
  // The event records a timestamp when it completes, so event_elapsed_time can be used on it.
  HAL_EVENT_FLAG_TIMING = 1u << 0,
};

// --- Streams ---------------------------------------------------------------------------------------

// Creates a stream on local device |device|; |*out_stream| must be released with stream_destroy.
// Thread-safe; may block.
typedef hal_status_t (*hal_stream_create_fn)(int32_t device, hal_stream_t* out_stream);

// Waits for queued work, then releases |stream|. A sticky error of the stream is discarded (the call
// still succeeds). Thread-safe; blocks.
typedef hal_status_t (*hal_stream_destroy_fn)(hal_stream_t stream);

// Blocks until every operation queued on |stream| so far has completed. Returns the stream's sticky
// asynchronous error, if any. Thread-safe; blocks.
typedef hal_status_t (*hal_stream_synchronize_fn)(hal_stream_t stream);

// Returns HAL_STATUS_OK when every operation queued on |stream| has completed, HAL_STATUS_NOT_READY when
// some has not, or the stream's sticky error. Thread-safe; never blocks.
typedef hal_status_t (*hal_stream_query_fn)(hal_stream_t stream);

// Makes all work queued on |stream| after this call wait until |event|'s most recent record (at the time
// of this call) has completed. An event that was never recorded is complete. |event| may belong to another
// device of the same plugin. Thread-safe; never blocks.
typedef hal_status_t (*hal_stream_wait_event_fn)(hal_stream_t stream, hal_event_t event);

// OPTIONAL. Queues |fn|(|user_data|) on |stream|: it runs on a plugin-owned host thread after the work
// queued before it and before the work queued after it. |fn| must not call into the plugin's stream or
// event entries for the same stream (that may deadlock). |fn| cannot report a failure: a host function
// that can fail records its outcome in |user_data| for the caller to check. Thread-safe; never blocks.
typedef void (*hal_host_fn)(void* user_data);
typedef hal_status_t (*hal_launch_host_func_fn)(hal_stream_t stream, hal_host_fn fn, void* user_data);

// --- Events -----------------------------------------------------------------------------------------

// Creates an event on local device |device| with HAL_EVENT_FLAG_* |flags|; |*out_event| must be released
// with event_destroy. Thread-safe; may block.
typedef hal_status_t (*hal_event_create_fn)(int32_t device, uint32_t flags, hal_event_t* out_event);

// Releases |event| (see the lifetime rules above). Thread-safe; does not block on device work.
typedef hal_status_t (*hal_event_destroy_fn)(hal_event_t event);

// Captures the work queued on |stream| so far: the event completes when that work has. Recording again
// replaces the captured point for later waits and queries. Portable callers record on a stream of the
// event's own device (drivers such as CUDA require it); cpu and emu accept any stream of the plugin.
// Thread-safe; never blocks.
typedef hal_status_t (*hal_event_record_fn)(hal_event_t event, hal_stream_t stream);

// Blocks until |event|'s most recent record has completed (immediately if never recorded). Thread-safe.
typedef hal_status_t (*hal_event_synchronize_fn)(hal_event_t event);

// Returns HAL_STATUS_OK when |event|'s most recent record has completed (or it was never recorded),
// HAL_STATUS_NOT_READY otherwise. Thread-safe; never blocks.
typedef hal_status_t (*hal_event_query_fn)(hal_event_t event);

// Writes the time in milliseconds between the completion of |start| and of |end|, both created with
// HAL_EVENT_FLAG_TIMING, recorded and completed. Fails with HAL_STATUS_NOT_READY if either has not
// completed, HAL_STATUS_INVALID_ARGUMENT if either lacks timing or was never recorded. Thread-safe.
typedef hal_status_t (*hal_event_elapsed_time_fn)(hal_event_t start, hal_event_t end, float* out_ms);

// --- Copies -----------------------------------------------------------------------------------------
// All copies are queued on |stream| and return at once. The caller keeps the source unchanged and both
// buffers alive until the copy completes (observe it with an event or a synchronize). Host buffers may
// be ordinary (pageable) memory or memory from host_allocate. |size_bytes| may be 0 (a no-op that still
// orders). Overlapping source and destination are undefined.

// Host memory |src| -> device memory |dst| on |stream|'s device.
typedef hal_status_t (*hal_memcpy_h2d_async_fn)(hal_stream_t stream, void* dst, const void* src,
                                                uint64_t size_bytes);
// Device memory |src| on |stream|'s device -> host memory |dst|.
typedef hal_status_t (*hal_memcpy_d2h_async_fn)(hal_stream_t stream, void* dst, const void* src,
                                                uint64_t size_bytes);
// Device memory -> device memory, both on |stream|'s device.
typedef hal_status_t (*hal_memcpy_d2d_async_fn)(hal_stream_t stream, void* dst, const void* src,
                                                uint64_t size_bytes);

// OPTIONAL. Device memory on |src_device| -> device memory on |dst_device|, both devices of this plugin,
// queued on |stream|, which belongs to one of the two. Without it the runtime stages through the host.
typedef hal_status_t (*hal_memcpy_peer_async_fn)(hal_stream_t stream, void* dst, int32_t dst_device,
                                                 const void* src, int32_t src_device, uint64_t size_bytes);

// OPTIONAL. Sets |size_bytes| bytes of device memory at |dst| to |value|, queued on |stream|.
typedef hal_status_t (*hal_memset_async_fn)(hal_stream_t stream, void* dst, uint8_t value, uint64_t size_bytes);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_STREAM_H_
