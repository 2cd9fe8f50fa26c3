// emu streams and events: asynchronous, in-order queues, each run by its own worker thread.
//
// stream.h asks for: in-order work per stream, no ordering between streams except through events,
// enqueueing that never waits, and errors that surface later (sticky) rather than at enqueue. A thread per
// stream with a FIFO gives exactly that, and makes a missing synchronize visible: the caller's thread
// races ahead of the worker, as it would of a real device.
//
// Events are built from *fences*. Every event_record makes a new fence, queued on the stream as a RECORD
// operation; the worker signals the fence when it reaches it. The event points at its latest fence;
// stream_wait_event queues a WAIT operation holding that fence. Fences are reference counted, so
// re-recording or destroying an event never disturbs a wait or a record already queued.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emu.h"

#define EMU_STREAM_MAGIC 0x53554d45u  // "EMUS": catches an event or a stale pointer passed as a stream.
#define EMU_EVENT_MAGIC 0x45554d45u   // "EMUE"

// ------------------------------------------------------------------------------------------------------
// Fences. One mutex and condition variable serve all of them: fences are signalled once per record,
// which is rare next to the copies, and one lock keeps the reference counting obviously right.

typedef struct emu_fence_t {
  int refs;               // The event that points at it and the queued operations that hold it.
  int done;               // The worker has reached the RECORD operation.
  uint64_t done_ns;       // CLOCK_MONOTONIC at that moment.
  hal_status_t status;    // The stream's sticky error at that moment, for event_synchronize.
  char message[256];
} emu_fence_t;

static pthread_mutex_t g_fence_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_fence_done = PTHREAD_COND_INITIALIZER;

static void fence_release(emu_fence_t* fence) {  // Call without g_fence_mutex.
  if (fence == NULL) return;
  pthread_mutex_lock(&g_fence_mutex);
  int last = --fence->refs == 0;
  pthread_mutex_unlock(&g_fence_mutex);
  if (last) free(fence);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void sleep_ns(uint64_t ns) {
  struct timespec t = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
  while (nanosleep(&t, &t) != 0 && errno == EINTR) {
  }
}

// ------------------------------------------------------------------------------------------------------
// Operations and streams.

typedef enum emu_op_kind_t { OP_COPY, OP_MEMSET, OP_HOST_FUNC, OP_RECORD, OP_WAIT } emu_op_kind_t;

typedef struct emu_op_t {
  struct emu_op_t* next;
  emu_op_kind_t kind;
  const char* entry;  // The entry that queued it, for error messages.
  // OP_COPY / OP_MEMSET. Device pointers stay device pointers until the worker runs the operation: it
  // resolves them again then, so memory freed while still in use fails the stream instead of corrupting.
  void* dst;
  const void* src;
  uint64_t size;
  int32_t dst_device, src_device;  // -1: host memory.
  uint8_t value;
  hal_host_fn fn;  // OP_HOST_FUNC
  void* user_data;
  emu_fence_t* fence;  // OP_RECORD signals it; OP_WAIT waits for it.
} emu_op_t;

struct hal_stream_s {
  uint32_t magic;
  int32_t device;
  pthread_t worker;
  pthread_mutex_t mutex;  // Guards everything below.
  pthread_cond_t wake;    // Work was queued, or the stream is being destroyed.
  pthread_cond_t idle;    // The queue drained.
  emu_op_t *head, *tail;
  int busy;      // The worker is running an operation it already took off the queue.
  int stopping;  // stream_destroy: finish the queue, then exit.
  hal_status_t error;  // Sticky: once set, the stream skips device work and reports it to every caller.
  char error_message[256];
};

struct hal_event_s {
  uint32_t magic;
  int32_t device;
  uint32_t flags;
  emu_fence_t* fence;  // The latest record; NULL if never recorded. Guarded by g_fence_mutex.
};

static hal_status_t check_stream(hal_stream_t stream) {
  if (stream == NULL || stream->magic != EMU_STREAM_MAGIC) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: %p is not an emu stream", (void*)stream);
  }
  return HAL_STATUS_OK;
}

static hal_status_t check_event(hal_event_t event) {
  if (event == NULL || event->magic != EMU_EVENT_MAGIC) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: %p is not an emu event", (void*)event);
  }
  return HAL_STATUS_OK;
}

// Reports the stream's sticky error. Call with stream->mutex held.
static hal_status_t sticky_error(hal_stream_t stream) {
  return emu_fail(stream->error, "%s", stream->error_message);
}

// Makes a stream's error sticky (the first one wins). Called by the worker.
static void fail_stream(hal_stream_t stream, const emu_op_t* op, const char* why) {
  pthread_mutex_lock(&stream->mutex);
  if (stream->error == HAL_STATUS_OK) {
    stream->error = HAL_STATUS_DEVICE_ERROR;
    snprintf(stream->error_message, sizeof(stream->error_message), "emu: %s queued on device %d failed: %s",
             op->entry, stream->device, why);
  }
  pthread_mutex_unlock(&stream->mutex);
}

// CPU time this thread has used: what the host really spent on its work, whatever else ran meanwhile.
static uint64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// Emulates a slower device: work the host did in |cpu_ns| of this thread's CPU time takes cpu / speed on the
// device, so the worker sleeps for what is left of that after the |wall_ns| the work took. Pacing by CPU time,
// not by elapsed time: when the emulated devices share the host's cores, time spent waiting for a core is not
// work, and it is absorbed into the device's own slowness instead of being stretched by 1 / speed with the
// rest. (The torch bridge paces the CPU kernels it runs for emulated devices the same way.)
static void pace_device(int32_t device, uint64_t cpu_ns, uint64_t wall_ns) {
  double speed = g_emu_devices[device].speed;
  if (speed >= 1.0) return;
  uint64_t device_ns = (uint64_t)((double)cpu_ns / speed);
  if (device_ns > wall_ns) sleep_ns(device_ns - wall_ns);
}

// Emulates the host link, if configured: an h2d/d2h copy takes at least size / link bandwidth.
static void pace_link(int32_t device, uint64_t size, uint64_t elapsed_ns) {
  double link = g_emu_devices[device].link_bytes_per_s;
  if (link <= 0) return;
  uint64_t target_ns = (uint64_t)((double)size / link * 1e9);
  if (target_ns > elapsed_ns) sleep_ns(target_ns - elapsed_ns);
}

// Resolves one side of a copy: device memory to the plugin's alias; host memory stays as it is.
static int resolve_side(int32_t device, const void* ptr, uint64_t size, void** out) {
  if (device < 0) {
    *out = (void*)ptr;
    return 1;
  }
  return emu_resolve(device, ptr, size, out) == HAL_STATUS_OK;
}

// Runs one operation on the worker thread.
// Whether |op| will be paced by pace_device (work on a device slower than the host).
static int op_is_paced(hal_stream_t stream, const emu_op_t* op) {
  switch (op->kind) {
    case OP_COPY:
      return op->dst_device >= 0 && op->src_device >= 0 &&
             (g_emu_devices[op->dst_device].speed < 1.0 || g_emu_devices[op->src_device].speed < 1.0);
    case OP_MEMSET:
    case OP_HOST_FUNC:
      return g_emu_devices[stream->device].speed < 1.0;
    default:
      return 0;
  }
}

static void run_op(hal_stream_t stream, emu_op_t* op) {
  const int failed = stream->error != HAL_STATUS_OK;  // Only this thread sets it, so no lock needed.
  // Thread CPU time costs a system call: read it only for work that pace_device will use it for.
  const uint64_t start = now_ns(), cpu_start = op_is_paced(stream, op) ? thread_cpu_ns() : 0;
  switch (op->kind) {
    case OP_COPY: {
      void *dst, *src;
      if (failed || op->size == 0) break;
      if (!resolve_side(op->dst_device, op->dst, op->size, &dst) ||
          !resolve_side(op->src_device, op->src, op->size, &src)) {
        fail_stream(stream, op, emu_last_message());
        break;
      }
      memcpy(dst, src, op->size);  // One plain memcpy: speed-1.0 devices copy at host speed.
      if (op->dst_device < 0 || op->src_device < 0) {
        pace_link(stream->device, op->size, now_ns() - start);
      } else {  // On-device or peer copy: as slow as the slower device.
        int32_t slower = g_emu_devices[op->dst_device].speed < g_emu_devices[op->src_device].speed
                             ? op->dst_device : op->src_device;
        pace_device(slower, thread_cpu_ns() - cpu_start, now_ns() - start);
      }
      break;
    }
    case OP_MEMSET: {
      void* dst;
      if (failed || op->size == 0) break;
      if (!resolve_side(op->dst_device, op->dst, op->size, &dst)) {
        fail_stream(stream, op, emu_last_message());
        break;
      }
      memset(dst, op->value, op->size);
      pace_device(stream->device, thread_cpu_ns() - cpu_start, now_ns() - start);
      break;
    }
    case OP_HOST_FUNC:
      if (failed) break;
      op->fn(op->user_data);
      pace_device(stream->device, thread_cpu_ns() - cpu_start, now_ns() - start);
      break;
    case OP_WAIT:  // Block this stream until the other stream's worker signals the fence.
      pthread_mutex_lock(&g_fence_mutex);
      while (!op->fence->done) pthread_cond_wait(&g_fence_done, &g_fence_mutex);
      pthread_mutex_unlock(&g_fence_mutex);
      break;
    case OP_RECORD: {  // Signalled even on a failed stream, so that nobody waits for it forever.
      pthread_mutex_lock(&stream->mutex);
      hal_status_t status = stream->error;
      pthread_mutex_unlock(&stream->mutex);
      pthread_mutex_lock(&g_fence_mutex);
      op->fence->done_ns = now_ns();
      op->fence->status = status;
      if (status != HAL_STATUS_OK) {
        snprintf(op->fence->message, sizeof(op->fence->message), "%s", stream->error_message);
      }
      op->fence->done = 1;
      pthread_cond_broadcast(&g_fence_done);
      pthread_mutex_unlock(&g_fence_mutex);
      break;
    }
  }
  fence_release(op->fence);
  free(op);
}

// Waking a sleeping thread costs several microseconds on a loaded or virtual machine, and a short copy
// followed by a synchronize pays it twice (wake the worker, wake the waiter). Both sides therefore poll for
// up to EMU_SPIN_NS before they sleep, as GPU drivers spin before they block. Bounded, so an idle stream
// costs no CPU.
#define EMU_SPIN_NS 30000u

// Polls |ready|(stream) without the lock until it holds or the spin budget is spent; the caller re-checks
// under the lock, so a spin that gives up early only costs the sleep it tried to avoid.
static void spin_until(hal_stream_t stream, int (*ready)(hal_stream_t)) {
  uint64_t until = 0;
  for (unsigned i = 0; !ready(stream); ++i) {
    if ((i & 63) == 0) {
      uint64_t now = now_ns();
      if (until == 0) until = now + EMU_SPIN_NS;
      else if (now >= until) return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

static int has_work(hal_stream_t stream) {
  return __atomic_load_n(&stream->head, __ATOMIC_ACQUIRE) != NULL || __atomic_load_n(&stream->stopping, __ATOMIC_ACQUIRE);
}

static int is_idle(hal_stream_t stream) {
  return __atomic_load_n(&stream->head, __ATOMIC_ACQUIRE) == NULL && !__atomic_load_n(&stream->busy, __ATOMIC_ACQUIRE);
}

static void* worker_main(void* arg) {
  hal_stream_t stream = arg;
  pthread_mutex_lock(&stream->mutex);
  for (;;) {
    if (stream->head == NULL && !stream->stopping) {
      pthread_mutex_unlock(&stream->mutex);
      spin_until(stream, has_work);
      pthread_mutex_lock(&stream->mutex);
    }
    while (stream->head == NULL && !stream->stopping) pthread_cond_wait(&stream->wake, &stream->mutex);
    emu_op_t* op = stream->head;
    if (op == NULL) break;  // Stopping, and the queue is drained.
    __atomic_store_n(&stream->busy, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&stream->head, op->next, __ATOMIC_RELEASE);
    if (stream->head == NULL) stream->tail = NULL;
    pthread_mutex_unlock(&stream->mutex);
    run_op(stream, op);
    pthread_mutex_lock(&stream->mutex);
    __atomic_store_n(&stream->busy, 0, __ATOMIC_RELEASE);
    if (stream->head == NULL) pthread_cond_broadcast(&stream->idle);
  }
  pthread_mutex_unlock(&stream->mutex);
  return NULL;
}

// Appends |op| to the queue. Never fails and never waits: a failed stream still runs RECORDs.
static void push(hal_stream_t stream, emu_op_t* op) {
  op->next = NULL;
  pthread_mutex_lock(&stream->mutex);
  if (stream->tail) stream->tail->next = op; else __atomic_store_n(&stream->head, op, __ATOMIC_RELEASE);
  stream->tail = op;
  pthread_cond_signal(&stream->wake);
  pthread_mutex_unlock(&stream->mutex);
}

// The common start of every enqueueing entry: a valid stream without a sticky error, and a new operation.
static hal_status_t begin_op(hal_stream_t stream, emu_op_kind_t kind, const char* entry, emu_op_t** out_op) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&stream->mutex);
  status = stream->error != HAL_STATUS_OK ? sticky_error(stream) : HAL_STATUS_OK;
  pthread_mutex_unlock(&stream->mutex);
  if (status != HAL_STATUS_OK) return status;
  emu_op_t* op = calloc(1, sizeof(emu_op_t));
  if (op == NULL) return emu_fail(HAL_STATUS_OUT_OF_MEMORY, "emu: %s: out of host memory", entry);
  op->kind = kind;
  op->entry = entry;
  op->dst_device = op->src_device = -1;
  *out_op = op;
  return HAL_STATUS_OK;
}

// ------------------------------------------------------------------------------------------------------
// Stream entries.

hal_status_t emu_stream_create(int32_t device, hal_stream_t* out_stream) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_stream == NULL) return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: out_stream is NULL");
  hal_stream_t stream = calloc(1, sizeof(*stream));
  if (stream == NULL) return emu_fail(HAL_STATUS_OUT_OF_MEMORY, "emu: stream_create: out of host memory");
  stream->magic = EMU_STREAM_MAGIC;
  stream->device = device;
  pthread_mutex_init(&stream->mutex, NULL);
  pthread_cond_init(&stream->wake, NULL);
  pthread_cond_init(&stream->idle, NULL);
  int err = pthread_create(&stream->worker, NULL, worker_main, stream);
  if (err != 0) {
    free(stream);
    return emu_fail_errno(HAL_STATUS_DEVICE_ERROR, err, "emu: stream_create: cannot start a worker thread");
  }
  *out_stream = stream;
  return emu_ok();
}

hal_status_t emu_stream_destroy(hal_stream_t stream) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&stream->mutex);
  __atomic_store_n(&stream->stopping, 1, __ATOMIC_RELEASE);  // The worker finishes the queue first (stream.h: destroy waits for queued work).
  pthread_cond_signal(&stream->wake);
  pthread_mutex_unlock(&stream->mutex);
  pthread_join(stream->worker, NULL);
  pthread_mutex_destroy(&stream->mutex);
  pthread_cond_destroy(&stream->wake);
  pthread_cond_destroy(&stream->idle);
  stream->magic = 0;
  free(stream);
  return emu_ok();
}

hal_status_t emu_stream_synchronize(hal_stream_t stream) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  spin_until(stream, is_idle);
  pthread_mutex_lock(&stream->mutex);
  while (stream->head != NULL || stream->busy) pthread_cond_wait(&stream->idle, &stream->mutex);
  status = stream->error != HAL_STATUS_OK ? sticky_error(stream) : emu_ok();
  pthread_mutex_unlock(&stream->mutex);
  return status;
}

hal_status_t emu_stream_query(hal_stream_t stream) {
  hal_status_t status = check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&stream->mutex);
  if (stream->error != HAL_STATUS_OK) {
    status = sticky_error(stream);
  } else if (stream->head != NULL || stream->busy) {
    status = emu_fail(HAL_STATUS_NOT_READY, "emu: stream has queued work");
  } else {
    status = emu_ok();
  }
  pthread_mutex_unlock(&stream->mutex);
  return status;
}

hal_status_t emu_stream_wait_event(hal_stream_t stream, hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  emu_op_t* op = NULL;
  status = begin_op(stream, OP_WAIT, "stream_wait_event", &op);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_fence_mutex);
  op->fence = event->fence;  // The record current now; later records do not affect this wait.
  if (op->fence) op->fence->refs++;
  pthread_mutex_unlock(&g_fence_mutex);
  if (op->fence == NULL) {  // Never recorded: complete, nothing to wait for.
    free(op);
    return emu_ok();
  }
  push(stream, op);
  return emu_ok();
}

hal_status_t emu_launch_host_func(hal_stream_t stream, hal_host_fn fn, void* user_data) {
  if (fn == NULL) return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: launch_host_func: fn is NULL");
  emu_op_t* op = NULL;
  hal_status_t status = begin_op(stream, OP_HOST_FUNC, "launch_host_func", &op);
  if (status != HAL_STATUS_OK) return status;
  op->fn = fn;
  op->user_data = user_data;
  push(stream, op);
  return emu_ok();
}

// ------------------------------------------------------------------------------------------------------
// Event entries.

hal_status_t emu_event_create(int32_t device, uint32_t flags, hal_event_t* out_event) {
  hal_status_t status = emu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_event == NULL || (flags & ~(uint32_t)HAL_EVENT_FLAG_TIMING) != 0) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: event_create: out_event is NULL or flags 0x%x unknown",
                    flags);
  }
  hal_event_t event = calloc(1, sizeof(*event));
  if (event == NULL) return emu_fail(HAL_STATUS_OUT_OF_MEMORY, "emu: event_create: out of host memory");
  event->magic = EMU_EVENT_MAGIC;
  event->device = device;
  event->flags = flags;
  *out_event = event;
  return emu_ok();
}

hal_status_t emu_event_destroy(hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  event->magic = 0;
  fence_release(event->fence);  // Queued records and waits keep their own references.
  free(event);
  return emu_ok();
}

hal_status_t emu_event_record(hal_event_t event, hal_stream_t stream) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  emu_op_t* op = NULL;
  status = begin_op(stream, OP_RECORD, "event_record", &op);
  if (status != HAL_STATUS_OK) return status;
  emu_fence_t* fence = calloc(1, sizeof(emu_fence_t));
  if (fence == NULL) {
    free(op);
    return emu_fail(HAL_STATUS_OUT_OF_MEMORY, "emu: event_record: out of host memory");
  }
  fence->refs = 2;  // The event and the RECORD operation.
  op->fence = fence;
  pthread_mutex_lock(&g_fence_mutex);
  emu_fence_t* previous = event->fence;
  event->fence = fence;
  pthread_mutex_unlock(&g_fence_mutex);
  fence_release(previous);
  push(stream, op);
  return emu_ok();
}

hal_status_t emu_event_synchronize(hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_fence_mutex);
  emu_fence_t* fence = event->fence;
  while (fence != NULL && !fence->done) pthread_cond_wait(&g_fence_done, &g_fence_mutex);
  status = fence != NULL && fence->status != HAL_STATUS_OK ? emu_fail(fence->status, "%s", fence->message)
                                                           : emu_ok();
  pthread_mutex_unlock(&g_fence_mutex);
  return status;
}

hal_status_t emu_event_query(hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_fence_mutex);
  int done = event->fence == NULL || event->fence->done;
  pthread_mutex_unlock(&g_fence_mutex);
  return done ? emu_ok() : emu_fail(HAL_STATUS_NOT_READY, "emu: event has not completed");
}

hal_status_t emu_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  hal_status_t status = check_event(start);
  if (status == HAL_STATUS_OK) status = check_event(end);
  if (status != HAL_STATUS_OK) return status;
  if (out_ms == NULL || !(start->flags & end->flags & HAL_EVENT_FLAG_TIMING)) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: event_elapsed_time needs out_ms and two timing events");
  }
  pthread_mutex_lock(&g_fence_mutex);
  const emu_fence_t *a = start->fence, *b = end->fence;
  if (a == NULL || b == NULL) {
    status = emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: event_elapsed_time: an event was never recorded");
  } else if (!a->done || !b->done) {
    status = emu_fail(HAL_STATUS_NOT_READY, "emu: event_elapsed_time: an event has not completed");
  } else {
    *out_ms = (float)(((double)b->done_ns - (double)a->done_ns) / 1e6);
    status = emu_ok();
  }
  pthread_mutex_unlock(&g_fence_mutex);
  return status;
}

// ------------------------------------------------------------------------------------------------------
// Copies and memset. Each checks its pointers now, so mistakes fail at the call with INVALID_ARGUMENT;
// the worker resolves them again when it runs (see emu_op_t).

static hal_status_t queue_copy(hal_stream_t stream, const char* entry, void* dst, int32_t dst_device,
                               const void* src, int32_t src_device, uint64_t size) {
  emu_op_t* op = NULL;
  hal_status_t status = begin_op(stream, OP_COPY, entry, &op);
  if (status != HAL_STATUS_OK) return status;
  void* unused;
  if (size > 0) {
    if (dst_device >= 0) status = emu_resolve(dst_device, dst, size, &unused);
    if (status == HAL_STATUS_OK && src_device >= 0) status = emu_resolve(src_device, src, size, &unused);
    // Host pointers that are really device memory would crash the worker; say so here instead.
    if (status == HAL_STATUS_OK && ((dst_device < 0 && emu_is_device_ptr(dst)) ||
                                    (src_device < 0 && emu_is_device_ptr(src)))) {
      status = emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: %s: a host-side pointer is emu device memory", entry);
    }
    if (status == HAL_STATUS_OK && (dst == NULL || src == NULL)) {
      status = emu_fail(HAL_STATUS_INVALID_ARGUMENT, "emu: %s: NULL pointer", entry);
    }
  }
  if (status != HAL_STATUS_OK) {
    free(op);
    return status;
  }
  op->dst = dst;
  op->dst_device = dst_device;
  op->src = src;
  op->src_device = src_device;
  op->size = size;
  push(stream, op);
  return emu_ok();
}

// Device of a stream, or -1 for a bad handle (queue_copy's begin_op reports it).
static int32_t device_of(hal_stream_t stream) {
  return stream != NULL && stream->magic == EMU_STREAM_MAGIC ? stream->device : -1;
}

hal_status_t emu_memcpy_h2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_h2d_async", dst, device_of(stream), src, -1, size);
}

hal_status_t emu_memcpy_d2h_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_d2h_async", dst, -1, src, device_of(stream), size);
}

hal_status_t emu_memcpy_d2d_async(hal_stream_t stream, void* dst, const void* src, uint64_t size) {
  return queue_copy(stream, "memcpy_d2d_async", dst, device_of(stream), src, device_of(stream), size);
}

hal_status_t emu_memcpy_peer_async(hal_stream_t stream, void* dst, int32_t dst_device, const void* src,
                                   int32_t src_device, uint64_t size) {
  hal_status_t status = check_stream(stream);
  if (status == HAL_STATUS_OK) status = emu_check_device(dst_device);
  if (status == HAL_STATUS_OK) status = emu_check_device(src_device);
  if (status != HAL_STATUS_OK) return status;
  if (stream->device != dst_device && stream->device != src_device) {
    return emu_fail(HAL_STATUS_INVALID_ARGUMENT,
                    "emu: memcpy_peer_async: the stream's device %d is neither the source %d nor the destination %d",
                    stream->device, src_device, dst_device);
  }
  return queue_copy(stream, "memcpy_peer_async", dst, dst_device, src, src_device, size);
}

hal_status_t emu_memset_async(hal_stream_t stream, void* dst, uint8_t value, uint64_t size) {
  emu_op_t* op = NULL;
  hal_status_t status = begin_op(stream, OP_MEMSET, "memset_async", &op);
  if (status != HAL_STATUS_OK) return status;
  void* unused;
  if (size > 0 && (status = emu_resolve(stream->device, dst, size, &unused)) != HAL_STATUS_OK) {
    free(op);
    return status;
  }
  op->dst = dst;
  op->dst_device = stream->device;
  op->value = value;
  op->size = size;
  push(stream, op);
  return emu_ok();
}
