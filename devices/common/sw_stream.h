// The software stream engine: streams, events and queued work for plugins whose device work is host code
// (HAL's cpu and emu plugins). It implements every stream and event entry of stream.h once, in plain C11
// with pthreads, so each capability of the software devices is written once for all of them.
//
//   sw_stream.h  this interface: what a plugin provides (sw_plugin) and what it gets (the sw_* entries);
//   sw_stream.c  streams (an in-order queue each, run by its own worker thread), fences and events, the
//                sticky-error rule, and fork();
//   sw_work.c    the device work the entries queue: copies, memset, host functions, and the pacing of
//                emulated devices that are slower than the host;
//   sw_config.c  what the plugins' configuration strings share (sizes);
//   sw_ops.c     operators (kernel.h): a call checked, copied whole and queued; the plugin's kernels run it
//                on the worker over host pointers, paced like other device work;
//   sw_collective.c  the collectives (collective.h) between processes of one host, through shared memory:
//                the bundled plugins' native collective library, as NCCL is CUDA's.
//
// A plugin defines `const sw_plugin_t sw_plugin` and puts the sw_* entries straight into its table. A new
// kind of queued work (a collective, say) is one sw_work_fn and an entry that checks its arguments and
// calls sw_enqueue; the engine gives it ordering, events, sticky errors and destruction for free.
#ifndef HAL_SW_STREAM_H_
#define HAL_SW_STREAM_H_

#include <stddef.h>
#include <stdint.h>

#include "hal/hal.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- What the plugin provides ----------------------------------------------------------------------------

typedef struct sw_operator_t sw_operator_t;  // Operators (kernel.h) a plugin implements; see below.

typedef struct sw_plugin_t {
  const char* name;  // The plugin's name, the prefix of every message: "emu".
  // The plugin's error model (status.h): every engine entry returns through these, so the calling thread's
  // last error is the plugin's own. |fail| formats like printf and returns |status|.
  hal_status_t (*ok)(void);
  hal_status_t (*fail)(hal_status_t status, const char* format, ...);
  const char* (*last_message)(void);  // The calling thread's last error message.
  // OK for a valid local device index, else the plugin's failure (UNAVAILABLE before initialize).
  hal_status_t (*check_device)(int32_t device);
  // Translates |size| bytes of device memory at |device_ptr| on |device| into a pointer the worker may read
  // and write. Fails (INVALID_ARGUMENT, with a message) unless the range lies inside one live allocation.
  hal_status_t (*resolve)(int32_t device, const void* device_ptr, uint64_t size, void** out_host_ptr);
  // OPTIONAL. True when |ptr| is device memory of any device, which a host-side argument must not be.
  // NULL where device memory is host memory (cpu).
  int (*is_device_ptr)(const void* ptr);
  // OPTIONAL, for emulated devices: |device|'s speed relative to the host, in (0, 1], and its emulated host
  // link in bytes/s (0: as fast as memcpy). NULL: every device runs at host speed, copies are unpaced.
  double (*speed)(int32_t device);
  double (*link_bytes_per_s)(int32_t device);
  // OPTIONAL: the operators every device of the plugin implements (sw_op_list / sw_op_launch serve them),
  // ending with an entry whose decl.name is NULL.
  const sw_operator_t* operators;
} sw_plugin_t;

extern const sw_plugin_t sw_plugin;

// --- Entries for the plugin's table (stream.h has their contracts) --------------------------------------

hal_status_t sw_stream_create(int32_t device, hal_stream_t* out_stream);
hal_status_t sw_stream_destroy(hal_stream_t stream);
hal_status_t sw_stream_synchronize(hal_stream_t stream);
hal_status_t sw_stream_query(hal_stream_t stream);
hal_status_t sw_stream_wait_event(hal_stream_t stream, hal_event_t event);
hal_status_t sw_event_create(int32_t device, uint32_t flags, hal_event_t* out_event);
hal_status_t sw_event_destroy(hal_event_t event);
hal_status_t sw_event_record(hal_event_t event, hal_stream_t stream);
hal_status_t sw_event_synchronize(hal_event_t event);
hal_status_t sw_event_query(hal_event_t event);
hal_status_t sw_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms);
// sw_work.c
hal_status_t sw_memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size);
hal_status_t sw_memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size);
hal_status_t sw_memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size);
hal_status_t sw_memcpy_peer_async(hal_stream_t stream, void* dst, int32_t dst_device, const void* src,
                                  int32_t src_device, uint64_t size);
hal_status_t sw_memset_async(hal_stream_t stream, void* dst, uint8_t value, uint64_t size);
hal_status_t sw_launch_host_func(hal_stream_t stream, hal_host_fn fn, void* user_data);

// --- Queued work ------------------------------------------------------------------------------------------

// Device work, run on |stream|'s worker thread after the work queued before it. |args| is sw_enqueue's copy
// of the caller's arguments. Returns OK, or fails through sw_plugin.fail: the stream has then failed, with
// that message (the sticky-error rule in sw_stream.c). Pointers are resolved here, not at enqueue, so memory
// freed under queued work fails the stream instead of corrupting memory.
typedef hal_status_t (*sw_work_fn)(hal_stream_t stream, const void* args);

// Queues |work| with a copy of the |args_size| bytes at |args|; |entry| names the ABI entry for messages.
// Never waits. Fails only for a handle that is not a stream of this process, or out of host memory.
hal_status_t sw_enqueue(hal_stream_t stream, const char* entry, sw_work_fn work, const void* args,
                        size_t args_size);

// Called on the queued copy of the arguments once the work ran (|ran| 1) or was skipped (|ran| 0: the stream
// had failed, or a child of fork() destroyed the parent's stream): work that holds a reference (a
// communicator) drops it here, whatever happened.
typedef void (*sw_release_fn)(const void* args, int ran);
// sw_enqueue, with |release| (may be NULL) called exactly once per queued work.
hal_status_t sw_enqueue_holding(hal_stream_t stream, const char* entry, sw_work_fn work, sw_release_fn release,
                                const void* args, size_t args_size);

// OK for a stream of this plugin created in this process, else INVALID_ARGUMENT / UNAVAILABLE with a message.
hal_status_t sw_check_stream(hal_stream_t stream);
// The local device |stream| belongs to (call after sw_check_stream).
int32_t sw_stream_device(hal_stream_t stream);

// CLOCK_MONOTONIC in nanoseconds.
uint64_t sw_now_ns(void);

// Pacing of emulated devices (sw_work.c): start before a piece of device work on |device|, end after it; a
// device slower than the host then takes 1 / speed of the CPU time the host spent on it.
typedef struct sw_pace_t {
  int32_t device;
  uint64_t wall_ns, cpu_ns;
} sw_pace_t;
sw_pace_t sw_pace_start(int32_t device);
void sw_pace_device(const sw_pace_t* pace);

// --- Collectives (sw_collective.c; collective.h has their contracts) ---------------------------------------

hal_status_t sw_comm_get_unique_id(hal_comm_unique_id_t* out_id);
hal_status_t sw_comm_init_rank(int32_t device, int32_t nranks, const hal_comm_unique_id_t* id, int32_t rank,
                               const hal_comm_config_t* config, hal_comm_t* out_comm);
hal_status_t sw_comm_destroy(hal_comm_t comm);
hal_status_t sw_comm_abort(hal_comm_t comm);
hal_status_t sw_allreduce(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                          hal_reduce_op_t op, hal_stream_t stream);
hal_status_t sw_allgather(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t send_count,
                          hal_dtype_t dtype, hal_stream_t stream);
hal_status_t sw_reduce_scatter(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t recv_count,
                               hal_dtype_t dtype, hal_reduce_op_t op, hal_stream_t stream);
hal_status_t sw_broadcast(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                          int32_t root, hal_stream_t stream);
hal_status_t sw_send(hal_comm_t comm, const void* sendbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                     hal_stream_t stream);
hal_status_t sw_recv(hal_comm_t comm, void* recvbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                     hal_stream_t stream);

// --- Operators (sw_ops.c; kernel.h has their contracts) ----------------------------------------------------

// One call of an operator as its kernel sees it on the worker: every tensor's |data| is a HOST pointer to the
// start of its storage (resolved through sw_plugin.resolve, so memory freed under queued work fails the
// stream instead of being touched), the rest as the caller passed it.
typedef struct sw_call_t {
  int32_t device;
  const hal_value_t* args;
  uint64_t num_args;
  const hal_tensor_t* results;
  uint64_t num_results;
} sw_call_t;

struct sw_operator_t {
  hal_op_t decl;  // Name and dtypes, as op_list reports them.
  // At enqueue, on the caller's thread (|data| still device pointers): OK, or HAL_STATUS_UNIMPLEMENTED (via
  // sw_plugin.fail, saying why) for a call the kernel does not cover. NULL: every call is covered.
  hal_status_t (*check)(const sw_call_t* call);
  // On the stream's worker: computes the results. Fails through sw_plugin.fail.
  hal_status_t (*run)(const sw_call_t* call);
};

// The entries for the plugin's table: every device has sw_plugin.operators.
hal_status_t sw_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count);
hal_status_t sw_op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                          const hal_tensor_t* results, uint64_t num_results);

// Bytes per element of |dtype|; 0 for an unknown one.

// --- Configuration ----------------------------------------------------------------------------------------

// A byte count with an optional binary suffix ("1048576", "512MiB", "1.5GiB"; B, KiB, MiB, GiB, TiB).
// Returns 0 for anything else, including sizes below one byte and from 18e18 bytes (near 2^64) up.
uint64_t sw_parse_size(const char* text);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_SW_STREAM_H_
