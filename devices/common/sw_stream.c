// Streams and events of the software stream engine (sw_stream.h): asynchronous, in-order queues, each run
// by its own worker thread.
//
// stream.h asks for in-order work per stream, no ordering between streams except through events, enqueueing
// that never waits, and errors that surface later rather than at enqueue. A thread per stream with a FIFO
// gives exactly that, and makes a missing synchronize visible: the caller's thread races ahead of the
// worker, as it would of a real device.
//
// Events are built from *fences*. Every event_record makes a new fence, queued on the stream as a RECORD
// operation; the worker signals the fence when it reaches it. The event points at its latest fence;
// stream_wait_event queues a WAIT operation holding that fence. Fences are reference counted, so
// re-recording or destroying an event never disturbs a wait or a record already queued.
//
// Errors of queued work (the rule stream.h states). When device work fails, the stream has failed: the
// worker skips the device work queued after it (its inputs may be garbage), and still runs records (their
// events report the failure) and waits (later work stays ordered). The next stream_synchronize, or the next
// stream_query that finds the stream idle, reports the failure once and clears it; work queued after that
// runs again. Enqueueing never reports it.
//
// fork(). A child has only the thread that forked, so no worker. It may only destroy the parent's streams
// and events: destroy frees their memory without waiting for or joining threads that are not there, and
// without their locks, which a worker may have held at the fork; every other entry refuses them with
// HAL_STATUS_UNAVAILABLE instead of waiting forever. The one global lock (fences) is held across fork(), so
// the child inherits it in a consistent state.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sw_stream.h"

#define SW_STREAM_MAGIC 0x53575353u  // "SSWS": catches an event or a stale pointer passed as a stream.
#define SW_EVENT_MAGIC 0x45575353u   // "SSWE"

// Every message starts with the plugin's name.
#define FAIL(status, format, ...) sw_plugin.fail((status), "%s: " format, sw_plugin.name, ##__VA_ARGS__)

uint64_t sw_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// ------------------------------------------------------------------------------------------------------
// Fences. One mutex and condition variable serve all of them: fences are signalled once per record, which
// is rare next to the copies, and one lock keeps the reference counting obviously right.

typedef struct sw_fence_t {
  int refs;             // The event that points at it and the queued operations that hold it.
  int done;             // The worker has reached the RECORD operation.
  uint64_t done_ns;     // CLOCK_MONOTONIC at that moment.
  hal_status_t status;  // The stream's unreported failure at that moment, for event_synchronize.
  char message[256];
} sw_fence_t;

static pthread_mutex_t g_fence_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_fence_done = PTHREAD_COND_INITIALIZER;

static void fence_release(sw_fence_t* fence) {  // Call without g_fence_mutex.
  if (fence == NULL) return;
  pthread_mutex_lock(&g_fence_mutex);
  int last = --fence->refs == 0;
  pthread_mutex_unlock(&g_fence_mutex);
  if (last) free(fence);
}

// ------------------------------------------------------------------------------------------------------
// fork(). Each stream and event remembers the generation it was made in; every child starts a new one.

static int g_generation;
static pthread_once_t g_fork_handlers_once = PTHREAD_ONCE_INIT;

static void before_fork(void) { pthread_mutex_lock(&g_fence_mutex); }
static void after_fork_in_parent(void) { pthread_mutex_unlock(&g_fence_mutex); }
static void after_fork_in_child(void) {
  g_generation++;
  pthread_cond_init(&g_fence_done, NULL);  // Its waiters were threads of the parent.
  pthread_mutex_unlock(&g_fence_mutex);
}
static void register_fork_handlers(void) {
  pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

// ------------------------------------------------------------------------------------------------------
// Operations and streams.

typedef enum sw_op_kind_t { OP_WORK, OP_RECORD, OP_WAIT } sw_op_kind_t;

typedef struct sw_op_t {
  struct sw_op_t* next;
  sw_op_kind_t kind;
  const char* entry;   // The entry that queued it, for messages.
  sw_work_fn work;     // OP_WORK: the device work, run on args.
  sw_release_fn release;  // OP_WORK, optional: called on args once the work ran or was skipped.
  sw_fence_t* fence;   // OP_RECORD signals it; OP_WAIT waits for it.
  max_align_t args[];  // OP_WORK: sw_enqueue's copy of the arguments.
} sw_op_t;

struct hal_stream_s {
  uint32_t magic;
  int32_t device;
  int generation;         // g_generation at creation: a stream of the parent in a child of fork().
  pthread_t worker;
  pthread_mutex_t mutex;  // Guards everything below.
  pthread_cond_t wake;    // Work was queued, or the stream is being destroyed.
  pthread_cond_t idle;    // The queue drained.
  sw_op_t *head, *tail;
  int busy;      // The worker is running an operation it already took off the queue.
  int stopping;  // stream_destroy: finish the queue, then exit.
  // The first failure of queued work, until reported. Only the worker sets it, and only a reporter that
  // finds the stream idle clears it, so the worker reads it without the lock while it runs an operation.
  hal_status_t error;
  char error_message[256];
};

struct hal_event_s {
  uint32_t magic;
  int32_t device;
  int generation;
  uint32_t flags;
  sw_fence_t* fence;  // The latest record; NULL if never recorded. Guarded by g_fence_mutex.
};

static int is_stream(hal_stream_t stream) { return stream != NULL && stream->magic == SW_STREAM_MAGIC; }
static int is_event(hal_event_t event) { return event != NULL && event->magic == SW_EVENT_MAGIC; }

hal_status_t sw_check_stream(hal_stream_t stream) {
  if (!is_stream(stream)) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%p is not a stream of this plugin", (void*)stream);
  if (stream->generation != g_generation) {
    return FAIL(HAL_STATUS_UNAVAILABLE, "stream %p belongs to the parent process: after fork() it can only be "
                "destroyed", (void*)stream);
  }
  return HAL_STATUS_OK;
}

static hal_status_t check_event(hal_event_t event) {
  if (!is_event(event)) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%p is not an event of this plugin", (void*)event);
  if (event->generation != g_generation) {
    return FAIL(HAL_STATUS_UNAVAILABLE, "event %p belongs to the parent process: after fork() it can only be "
                "destroyed", (void*)event);
  }
  return HAL_STATUS_OK;
}

int32_t sw_stream_device(hal_stream_t stream) { return is_stream(stream) ? stream->device : -1; }

// Records the first failure of queued work (see the top of this file). Called by the worker.
// A collective's TIMEOUT or ABORTED stays what it is (collective.h); any other failure is a DEVICE_ERROR.
static void fail_stream(hal_stream_t stream, const sw_op_t* op, hal_status_t status, const char* why) {
  pthread_mutex_lock(&stream->mutex);
  if (stream->error == HAL_STATUS_OK) {
    stream->error = status == HAL_STATUS_TIMEOUT || status == HAL_STATUS_ABORTED ? status : HAL_STATUS_DEVICE_ERROR;
    snprintf(stream->error_message, sizeof(stream->error_message), "%s: %s queued on device %d failed: %s",
             sw_plugin.name, op->entry, stream->device, why);
  }
  pthread_mutex_unlock(&stream->mutex);
}

// Reports the stream's failure, once: it is cleared. Call with stream->mutex held, on an idle stream.
static hal_status_t report_failure(hal_stream_t stream) {
  if (stream->error == HAL_STATUS_OK) return sw_plugin.ok();
  hal_status_t status = sw_plugin.fail(stream->error, "%s", stream->error_message);
  stream->error = HAL_STATUS_OK;
  return status;
}

// Runs one operation on the worker thread.
static void run_op(hal_stream_t stream, sw_op_t* op) {
  switch (op->kind) {
    case OP_WORK: {  // Skipped after a failure not yet reported.
      const int run = stream->error == HAL_STATUS_OK;
      hal_status_t status = run ? op->work(stream, op->args) : HAL_STATUS_OK;
      if (status != HAL_STATUS_OK) fail_stream(stream, op, status, sw_plugin.last_message());
      if (op->release != NULL) op->release(op->args, run);
      break;
    }
    case OP_WAIT:  // Block this stream until the other stream's worker signals the fence.
      pthread_mutex_lock(&g_fence_mutex);
      while (!op->fence->done) pthread_cond_wait(&g_fence_done, &g_fence_mutex);
      pthread_mutex_unlock(&g_fence_mutex);
      break;
    case OP_RECORD:  // Signalled on a failed stream too, carrying the failure, so that nobody waits forever.
      op->fence->status = stream->error;
      if (stream->error != HAL_STATUS_OK) {
        snprintf(op->fence->message, sizeof(op->fence->message), "%s", stream->error_message);
      }
      // The stream's last record: idle before the event completes, so that a stream_query right after the
      // event's synchronize finds the stream idle (every operation queued on it has completed). The worker
      // only frees |op| after this. An op queued meanwhile makes head non-NULL: the stream is not idle.
      if (__atomic_load_n(&stream->head, __ATOMIC_ACQUIRE) == NULL) __atomic_store_n(&stream->busy, 0, __ATOMIC_RELEASE);
      pthread_mutex_lock(&g_fence_mutex);
      op->fence->done_ns = sw_now_ns();
      op->fence->done = 1;
      pthread_cond_broadcast(&g_fence_done);
      pthread_mutex_unlock(&g_fence_mutex);
      break;
  }
  fence_release(op->fence);
  free(op);
}

// Waking a sleeping thread costs several microseconds on a loaded or virtual machine, and a short copy
// followed by a synchronize pays it twice (wake the worker, wake the waiter). Both sides therefore poll for
// up to SW_SPIN_NS before they sleep, as GPU drivers spin before they block. Bounded, so an idle stream
// costs no CPU.
#define SW_SPIN_NS 30000u

// Polls |ready|(stream) without the lock until it holds or the spin budget is spent; the caller re-checks
// under the lock, so a spin that gives up early only costs the sleep it tried to avoid.
static void spin_until(hal_stream_t stream, int (*ready)(hal_stream_t)) {
  uint64_t until = 0;
  for (unsigned i = 0; !ready(stream); ++i) {
    if ((i & 63) == 0) {
      uint64_t now = sw_now_ns();
      if (until == 0) until = now + SW_SPIN_NS;
      else if (now >= until) return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

static int has_work(hal_stream_t stream) {
  return __atomic_load_n(&stream->head, __ATOMIC_ACQUIRE) != NULL ||
         __atomic_load_n(&stream->stopping, __ATOMIC_ACQUIRE);
}

static int is_idle(hal_stream_t stream) {
  return __atomic_load_n(&stream->head, __ATOMIC_ACQUIRE) == NULL &&
         !__atomic_load_n(&stream->busy, __ATOMIC_ACQUIRE);
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
    sw_op_t* op = stream->head;
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

// A new operation of |kind| with room for |args_size| bytes of arguments, or NULL (out of host memory,
// reported).
static sw_op_t* new_op(sw_op_kind_t kind, const char* entry, size_t args_size) {
  sw_op_t* op = calloc(1, sizeof(sw_op_t) + args_size);
  if (op == NULL) {
    FAIL(HAL_STATUS_OUT_OF_MEMORY, "%s: out of host memory", entry);
    return NULL;
  }
  op->kind = kind;
  op->entry = entry;
  return op;
}

// Appends |op| to the queue. Never fails and never waits.
static void push(hal_stream_t stream, sw_op_t* op) {
  pthread_mutex_lock(&stream->mutex);
  if (stream->tail) stream->tail->next = op; else __atomic_store_n(&stream->head, op, __ATOMIC_RELEASE);
  stream->tail = op;
  pthread_cond_signal(&stream->wake);
  pthread_mutex_unlock(&stream->mutex);
}

hal_status_t sw_enqueue(hal_stream_t stream, const char* entry, sw_work_fn work, const void* args,
                        size_t args_size) {
  return sw_enqueue_holding(stream, entry, work, NULL, args, args_size);
}

hal_status_t sw_enqueue_holding(hal_stream_t stream, const char* entry, sw_work_fn work, sw_release_fn release,
                                const void* args, size_t args_size) {
  hal_status_t status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  sw_op_t* op = new_op(OP_WORK, entry, args_size);
  if (op == NULL) return HAL_STATUS_OUT_OF_MEMORY;
  op->work = work;
  op->release = release;
  memcpy(op->args, args, args_size);
  push(stream, op);
  return sw_plugin.ok();
}

// ------------------------------------------------------------------------------------------------------
// Stream entries.

hal_status_t sw_stream_create(int32_t device, hal_stream_t* out_stream) {
  hal_status_t status = sw_plugin.check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_stream == NULL) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "out_stream is NULL");
  pthread_once(&g_fork_handlers_once, register_fork_handlers);
  hal_stream_t stream = calloc(1, sizeof(*stream));
  if (stream == NULL) return FAIL(HAL_STATUS_OUT_OF_MEMORY, "stream_create: out of host memory");
  stream->magic = SW_STREAM_MAGIC;
  stream->device = device;
  stream->generation = g_generation;
  pthread_mutex_init(&stream->mutex, NULL);
  pthread_cond_init(&stream->wake, NULL);
  pthread_cond_init(&stream->idle, NULL);
  int err = pthread_create(&stream->worker, NULL, worker_main, stream);
  if (err != 0) {
    free(stream);
    return FAIL(HAL_STATUS_DEVICE_ERROR, "stream_create: cannot start a worker thread: %s (errno %d)",
                strerror(err), err);
  }
  *out_stream = stream;
  return sw_plugin.ok();
}

// A stream of the parent in a child of fork(): only its memory is freed (see the top of this file).
static hal_status_t free_parent_stream(hal_stream_t stream) {
  for (sw_op_t *op = stream->head, *next; op != NULL; op = next) {
    next = op->next;
    if (op->release != NULL) op->release(op->args, 0);
    fence_release(op->fence);
    free(op);
  }
  stream->magic = 0;
  free(stream);
  return sw_plugin.ok();
}

hal_status_t sw_stream_destroy(hal_stream_t stream) {
  if (!is_stream(stream)) return sw_check_stream(stream);
  if (stream->generation != g_generation) return free_parent_stream(stream);
  pthread_mutex_lock(&stream->mutex);
  __atomic_store_n(&stream->stopping, 1, __ATOMIC_RELEASE);  // The worker finishes the queue first.
  pthread_cond_signal(&stream->wake);
  pthread_mutex_unlock(&stream->mutex);
  pthread_join(stream->worker, NULL);
  pthread_mutex_destroy(&stream->mutex);
  pthread_cond_destroy(&stream->wake);
  pthread_cond_destroy(&stream->idle);
  stream->magic = 0;
  free(stream);
  return sw_plugin.ok();
}

hal_status_t sw_stream_synchronize(hal_stream_t stream) {
  hal_status_t status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  spin_until(stream, is_idle);
  pthread_mutex_lock(&stream->mutex);
  while (stream->head != NULL || stream->busy) pthread_cond_wait(&stream->idle, &stream->mutex);
  status = report_failure(stream);
  pthread_mutex_unlock(&stream->mutex);
  return status;
}

hal_status_t sw_stream_query(hal_stream_t stream) {
  hal_status_t status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  // Busy streams answer without the lock: waiters poll this, and a polled lock would stall the worker.
  if (!is_idle(stream)) return FAIL(HAL_STATUS_NOT_READY, "stream has queued work");
  pthread_mutex_lock(&stream->mutex);
  if (stream->head != NULL || stream->busy) {
    status = FAIL(HAL_STATUS_NOT_READY, "stream has queued work");
  } else {
    status = report_failure(stream);
  }
  pthread_mutex_unlock(&stream->mutex);
  return status;
}

hal_status_t sw_stream_wait_event(hal_stream_t stream, hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status == HAL_STATUS_OK) status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_fence_mutex);
  sw_fence_t* fence = event->fence;  // The record current now; later records do not affect this wait.
  if (fence != NULL) fence->refs++;
  pthread_mutex_unlock(&g_fence_mutex);
  if (fence == NULL) return sw_plugin.ok();  // Never recorded: complete, nothing to wait for.
  sw_op_t* op = new_op(OP_WAIT, "stream_wait_event", 0);
  if (op == NULL) {
    fence_release(fence);
    return HAL_STATUS_OUT_OF_MEMORY;
  }
  op->fence = fence;
  push(stream, op);
  return sw_plugin.ok();
}

// ------------------------------------------------------------------------------------------------------
// Event entries.

hal_status_t sw_event_create(int32_t device, uint32_t flags, hal_event_t* out_event) {
  hal_status_t status = sw_plugin.check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_event == NULL || (flags & ~(uint32_t)HAL_EVENT_FLAG_TIMING) != 0) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "event_create: out_event is NULL or flags 0x%x unknown", flags);
  }
  pthread_once(&g_fork_handlers_once, register_fork_handlers);
  hal_event_t event = calloc(1, sizeof(*event));
  if (event == NULL) return FAIL(HAL_STATUS_OUT_OF_MEMORY, "event_create: out of host memory");
  event->magic = SW_EVENT_MAGIC;
  event->device = device;
  event->generation = g_generation;
  event->flags = flags;
  *out_event = event;
  return sw_plugin.ok();
}

// Never waits, so a child of fork() destroys the parent's events the same way.
hal_status_t sw_event_destroy(hal_event_t event) {
  if (!is_event(event)) return check_event(event);
  event->magic = 0;
  fence_release(event->fence);  // Queued records and waits keep their own references.
  free(event);
  return sw_plugin.ok();
}

hal_status_t sw_event_record(hal_event_t event, hal_stream_t stream) {
  hal_status_t status = check_event(event);
  if (status == HAL_STATUS_OK) status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  sw_op_t* op = new_op(OP_RECORD, "event_record", 0);
  sw_fence_t* fence = calloc(1, sizeof(sw_fence_t));
  if (op == NULL || fence == NULL) {
    free(op);
    free(fence);
    return FAIL(HAL_STATUS_OUT_OF_MEMORY, "event_record: out of host memory");
  }
  fence->refs = 2;  // The event and the RECORD operation.
  op->fence = fence;
  pthread_mutex_lock(&g_fence_mutex);
  sw_fence_t* previous = event->fence;
  event->fence = fence;
  pthread_mutex_unlock(&g_fence_mutex);
  fence_release(previous);
  push(stream, op);
  return sw_plugin.ok();
}

hal_status_t sw_event_synchronize(hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_fence_mutex);
  sw_fence_t* fence = event->fence;
  while (fence != NULL && !fence->done) pthread_cond_wait(&g_fence_done, &g_fence_mutex);
  status = fence != NULL && fence->status != HAL_STATUS_OK ? sw_plugin.fail(fence->status, "%s", fence->message)
                                                           : sw_plugin.ok();
  pthread_mutex_unlock(&g_fence_mutex);
  return status;
}

hal_status_t sw_event_query(hal_event_t event) {
  hal_status_t status = check_event(event);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&g_fence_mutex);
  int done = event->fence == NULL || event->fence->done;
  pthread_mutex_unlock(&g_fence_mutex);
  return done ? sw_plugin.ok() : FAIL(HAL_STATUS_NOT_READY, "event has not completed");
}

hal_status_t sw_event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  hal_status_t status = check_event(start);
  if (status == HAL_STATUS_OK) status = check_event(end);
  if (status != HAL_STATUS_OK) return status;
  if (out_ms == NULL || !(start->flags & end->flags & HAL_EVENT_FLAG_TIMING)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "event_elapsed_time needs out_ms and two timing events");
  }
  pthread_mutex_lock(&g_fence_mutex);
  const sw_fence_t *a = start->fence, *b = end->fence;
  if (a == NULL || b == NULL) {
    status = FAIL(HAL_STATUS_INVALID_ARGUMENT, "event_elapsed_time: an event was never recorded");
  } else if (!a->done || !b->done) {
    status = FAIL(HAL_STATUS_NOT_READY, "event_elapsed_time: an event has not completed");
  } else {
    *out_ms = (float)(((double)b->done_ns - (double)a->done_ns) / 1e6);
    status = sw_plugin.ok();
  }
  pthread_mutex_unlock(&g_fence_mutex);
  return status;
}
