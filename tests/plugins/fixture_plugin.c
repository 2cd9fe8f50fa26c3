// A minimal in-memory HAL plugin for the runtime's tests (compiled at test time by plugin_fixtures.py).
//
// Devices are host memory (malloc) with a capacity; every stream runs its work on its own worker thread,
// so asynchrony (and missing synchronization) is real. Config string (comma separated):
//   capacity=<bytes>  per-device capacity (default 64 MiB)
//   devices=<n>       device count (default 2)
//   fail_alloc=1      memory_allocate fails with HAL_STATUS_DEVICE_ERROR, native code 700
//   misbehave=<how>   results that contradict the ABI, for the validation layer's tests (HAL_VALIDATE):
//                     misaligned (memory_allocate returns a pointer 16 bytes off), overlap (memory_allocate
//                     returns the previous allocation again while it is live), meminfo (free > total),
//                     status (stream_synchronize returns 42, not a hal_status_t), not_ready
//                     (stream_synchronize returns HAL_STATUS_NOT_READY)
//
// Variants, chosen with -D at compile time, each a way a plugin can be broken:
//   FIXTURE_NAME="x"           plugin name (default "fixture")
//   FIXTURE_NO_ENTRY           the entry symbol is not exported
//   FIXTURE_NULL_TABLE         the entry returns NULL
//   FIXTURE_MAJOR=2            a different ABI major version (with FIXTURE_MINOR=0: "2.0")
//   FIXTURE_ABI10              an ABI 1.0 plugin: minor 0, the table ends after recv (no compute entries)
//   FIXTURE_HALF_OPS           op_list without op_launch (half of kernel.h's operator group)
//   FIXTURE_ONE_KERNEL         declares one operator, aten::neg for f32, computing -x + neg_bias (config
//                              "neg_bias=N", default 0: a test can tell whose kernel ran); it declines
//                              non-contiguous tensors
//   FIXTURE_NEWER              ABI 1.7: a bigger table with extra trailing fields
//   FIXTURE_OLD_TABLE          struct_size ends right after memcpy_d2d_async (optional entries beyond it
//                              are still filled in, and must be read as NULL)
//   FIXTURE_MISSING_REQUIRED   stream_query and event_query are NULL
//   FIXTURE_INIT_FAILS         initialize fails (HAL_STATUS_DEVICE_ERROR, native code 42)
//   FIXTURE_BAD_NAME           name "Bad-Name"
//   FIXTURE_EXT=<n>            an extension chain (ABI 1.2, hal/extension.h): an unknown "vendor.unknown_thing"
//                              v3, then "hal.topology" v1 (each device reaches the host over pcie at 1e9 B/s,
//                              and every other device over a fabric with peer access at (1 + peer) * 1e9 B/s,
//                              2 us). Broken chains: 2 a cycle, 3 a struct_size of 0, 4 an invalid name,
//                              5 "hal.topology" twice
//   FIXTURE_ABI11              an ABI 1.1 plugin: minor 1, the table ends after kernel_launch (with
//                              FIXTURE_EXT the chain is still set beyond it, and must be ignored)
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hal/hal.h"

#ifndef FIXTURE_NAME
#define FIXTURE_NAME "fixture"
#endif
#ifndef FIXTURE_MAJOR
#define FIXTURE_MAJOR HAL_ABI_VERSION_MAJOR
#endif
#ifndef FIXTURE_MINOR
#define FIXTURE_MINOR HAL_ABI_VERSION_MINOR
#endif

// --- Errors -------------------------------------------------------------------------------------------
static __thread char g_message[512];
static __thread int32_t g_native;

static hal_status_t fail(hal_status_t status, int32_t native, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(g_message, sizeof(g_message), format, args);
  va_end(args);
  g_native = native;
  return status;
}
static hal_status_t ok(void) {
  g_message[0] = '\0';
  g_native = 0;
  return HAL_STATUS_OK;
}
static size_t get_last_error(char* buffer, size_t capacity, int32_t* out_native) {
  size_t length = strlen(g_message);
  if (capacity > 0) {
    size_t n = length < capacity - 1 ? length : capacity - 1;
    memcpy(buffer, g_message, n);
    buffer[n] = '\0';
  }
  if (out_native) *out_native = g_native;
  return length;
}

// --- Devices and memory -------------------------------------------------------------------------------
static int g_devices = 2;
static uint64_t g_capacity = 64u << 20;
static int g_fail_alloc = 0;
static int g_neg_bias = 0;
static char g_misbehave[32];
static void* g_last_alloc;  // misbehave=overlap hands it out again.
static int misbehaves(const char* how) { return strcmp(g_misbehave, how) == 0; }
static uint64_t g_used[16];
static pthread_mutex_t g_memory_mutex = PTHREAD_MUTEX_INITIALIZER;

typedef struct header_t {  // In front of every allocation, so free knows the size.
  uint64_t size;
  int32_t device;
  uint32_t magic;
} header_t;
#define HEADER_BYTES 256
#define MAGIC 0x4841u

static hal_status_t initialize(const hal_plugin_init_args_t* args) {
#ifdef FIXTURE_INIT_FAILS
  return fail(HAL_STATUS_DEVICE_ERROR, 42, "fixture init failed: no device present");
#endif
  if (args->config) {
    const char* p = args->config;
    while (*p) {
      unsigned long long value = 0;
      if (sscanf(p, "capacity=%llu", &value) == 1) g_capacity = value;
      if (sscanf(p, "devices=%llu", &value) == 1) g_devices = (int)value;
      if (sscanf(p, "fail_alloc=%llu", &value) == 1) g_fail_alloc = (int)value;
      if (sscanf(p, "neg_bias=%llu", &value) == 1) g_neg_bias = (int)value;
      sscanf(p, "misbehave=%31[a-z_]", g_misbehave);
      const char* comma = strchr(p, ',');
      if (!comma) break;
      p = comma + 1;
    }
  }
  if (g_devices < 0 || g_devices > 16) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "devices must be 0..16");
  return ok();
}
static void shutdown(void) {}

static hal_status_t device_count(int32_t* out) {
  *out = g_devices;
  return ok();
}
static hal_status_t check_device(int32_t device) {
  if (device < 0 || device >= g_devices) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "no device %d", device);
  return ok();
}
static hal_status_t get_properties(int32_t device, hal_device_properties_t* p) {
  if (check_device(device)) return HAL_STATUS_INVALID_ARGUMENT;
  if (HAL_STRUCT_HAS_FIELD(p, hal_device_properties_t, relative_speed)) {
    snprintf(p->name, sizeof(p->name), "Fixture Device %d", device);
    snprintf(p->vendor, sizeof(p->vendor), "HAL tests");
    p->kind = HAL_DEVICE_KIND_OTHER;
    p->flags = HAL_DEVICE_FLAG_EMULATED | HAL_DEVICE_FLAG_MAPPABLE;
    p->total_memory_bytes = g_capacity;
    p->peak_flops[HAL_DTYPE_F32] = 1e9;
    p->peak_flops[HAL_DTYPE_BF16] = 2e9;
    p->memory_bandwidth = 1e10;
    p->relative_speed = 1.0;
  }
  return ok();
}
static hal_status_t get_memory_info(int32_t device, uint64_t* out_free, uint64_t* out_total) {
  if (check_device(device)) return HAL_STATUS_INVALID_ARGUMENT;
  pthread_mutex_lock(&g_memory_mutex);
  *out_free = g_capacity - g_used[device];
  pthread_mutex_unlock(&g_memory_mutex);
  *out_total = g_capacity;
  if (misbehaves("meminfo")) *out_free = g_capacity + 1;
  return ok();
}
static hal_status_t memory_allocate(int32_t device, uint64_t size, void** out_ptr) {
  if (check_device(device)) return HAL_STATUS_INVALID_ARGUMENT;
  if (size == 0) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "size 0");
  if (g_fail_alloc) return fail(HAL_STATUS_DEVICE_ERROR, 700, "fixture: simulated driver failure");
  if (misbehaves("overlap") && g_last_alloc) {
    *out_ptr = g_last_alloc;
    return ok();
  }
  pthread_mutex_lock(&g_memory_mutex);
  if (g_used[device] + size > g_capacity) {
    uint64_t free_bytes = g_capacity - g_used[device];
    pthread_mutex_unlock(&g_memory_mutex);
    return fail(HAL_STATUS_OUT_OF_MEMORY, 2, "fixture: requested %llu bytes, %llu free", (unsigned long long)size,
                (unsigned long long)free_bytes);
  }
  g_used[device] += size;
  pthread_mutex_unlock(&g_memory_mutex);
  char* raw = aligned_alloc(256, HEADER_BYTES + ((size + 255) / 256) * 256);
  header_t* h = (header_t*)raw;
  h->size = size;
  h->device = device;
  h->magic = MAGIC;
  *out_ptr = raw + HEADER_BYTES + (misbehaves("misaligned") ? 16 : 0);
  g_last_alloc = *out_ptr;
  return ok();
}
static hal_status_t memory_free(int32_t device, void* ptr) {
  header_t* h = (header_t*)((char*)ptr - HEADER_BYTES);
  if (h->magic != MAGIC || h->device != device) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "bad pointer %p", ptr);
  h->magic = 0;
  pthread_mutex_lock(&g_memory_mutex);
  g_used[device] -= h->size;
  pthread_mutex_unlock(&g_memory_mutex);
  free(h);
  return ok();
}
static hal_status_t memory_map(int32_t device, void* ptr, uint64_t size, void** out_host) {
  *out_host = ptr;
  return ok();
}
static hal_status_t memory_unmap(int32_t device, void* host, uint64_t size) { return ok(); }

// --- Extensions (FIXTURE_EXT) -------------------------------------------------------------------------
#ifdef FIXTURE_EXT
static hal_status_t device_links(int32_t device, hal_link_t* out, uint64_t capacity, uint64_t* out_count) {
  if (device < 0 || device >= g_devices) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "no device %d", device);
  uint64_t n = 0;
  if (n < capacity) out[n] = (hal_link_t){HAL_LINK_PEER_HOST, HAL_LINK_KIND_PCIE, 0, 0, 1e9, 0};
  ++n;
  for (int32_t peer = 0; peer < g_devices; ++peer) {
    if (peer == device) continue;
    if (n < capacity) {
      out[n] = (hal_link_t){peer, HAL_LINK_KIND_FABRIC, HAL_LINK_FLAG_PEER_ACCESS, 0, (1 + peer) * 1e9, 2e-6};
    }
    ++n;
  }
  *out_count = n;
  return ok();
}
static hal_topology_extension_t g_topology = {
    {sizeof(hal_topology_extension_t), HAL_TOPOLOGY_EXTENSION_NAME, HAL_TOPOLOGY_EXTENSION_VERSION, 0, NULL},
    device_links};
static hal_extension_t g_second_topology = {sizeof(hal_extension_t), HAL_TOPOLOGY_EXTENSION_NAME, 1, 0, NULL};
static hal_extension_t g_unknown = {sizeof(hal_extension_t) + 16, "vendor.unknown_thing", 3, 0, &g_topology.base};
static const hal_extension_t* extension_chain(void) {
  switch (FIXTURE_EXT) {
    case 2: g_topology.base.next = &g_unknown; break;                         // a cycle
    case 3: g_unknown.struct_size = 0; break;                                 // struct_size 0
    case 4: g_unknown.name = "Vendor Thing"; break;                           // an invalid name
    case 5: g_topology.base.next = &g_second_topology; break;                 // a name twice
    default: break;
  }
  return &g_unknown;
}
#endif

// --- Streams: a worker thread each, running a FIFO of operations --------------------------------------
typedef struct hal_stream_s stream_t;
typedef struct hal_event_s event_t;

enum { OP_COPY, OP_SET, OP_HOST, OP_WAIT, OP_MARK };
typedef struct op_t {
  int kind;
  void* dst;
  const void* src;
  uint64_t size;
  uint8_t value;
  hal_host_fn fn;
  void* data;
  stream_t* wait_stream;  // OP_WAIT: until wait_stream->completed >= wait_seq
  uint64_t wait_seq;
  event_t* event;         // OP_MARK
  uint64_t seq;
  struct op_t* next;
} op_t;

struct hal_stream_s {
  int32_t device;
  pthread_mutex_t mutex;
  pthread_cond_t cond;
  op_t* head;
  op_t* tail;
  uint64_t submitted, completed;
  int stop;
  pthread_t thread;
};
static pthread_mutex_t g_progress_mutex = PTHREAD_MUTEX_INITIALIZER;  // Guards completed counts + events.
static pthread_cond_t g_progress = PTHREAD_COND_INITIALIZER;

struct hal_event_s {
  uint32_t flags;
  stream_t* stream;  // NULL: never recorded.
  uint64_t seq;
  double time_ms;
  int timed;
};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint64_t completed_of(stream_t* s) {
  pthread_mutex_lock(&g_progress_mutex);
  uint64_t c = s->completed;
  pthread_mutex_unlock(&g_progress_mutex);
  return c;
}

static void* worker(void* arg) {
  stream_t* s = arg;
  for (;;) {
    pthread_mutex_lock(&s->mutex);
    while (!s->head && !s->stop) pthread_cond_wait(&s->cond, &s->mutex);
    if (!s->head) {
      pthread_mutex_unlock(&s->mutex);
      return NULL;
    }
    op_t* op = s->head;
    pthread_mutex_unlock(&s->mutex);

    switch (op->kind) {
      case OP_COPY: memcpy(op->dst, op->src, op->size); break;
      case OP_SET: memset(op->dst, op->value, op->size); break;
      case OP_HOST: op->fn(op->data); break;
      case OP_WAIT:
        pthread_mutex_lock(&g_progress_mutex);
        while (op->wait_stream->completed < op->wait_seq) pthread_cond_wait(&g_progress, &g_progress_mutex);
        pthread_mutex_unlock(&g_progress_mutex);
        break;
      case OP_MARK: break;
    }
    pthread_mutex_lock(&s->mutex);
    s->head = op->next;
    if (!s->head) s->tail = NULL;
    pthread_mutex_unlock(&s->mutex);
    pthread_mutex_lock(&g_progress_mutex);
    if (op->kind == OP_MARK && op->event->stream == s && op->event->seq == op->seq) {
      op->event->time_ms = now_ms();
      op->event->timed = 1;
    }
    s->completed = op->seq;
    pthread_cond_broadcast(&g_progress);
    pthread_mutex_unlock(&g_progress_mutex);
    free(op);
  }
}

static uint64_t enqueue(stream_t* s, op_t* op) {
  pthread_mutex_lock(&s->mutex);
  op->seq = ++s->submitted;
  op->next = NULL;
  if (s->tail) s->tail->next = op;
  else s->head = op;
  s->tail = op;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->mutex);
  return op->seq;
}

static op_t* new_op(int kind) {
  op_t* op = calloc(1, sizeof(op_t));
  op->kind = kind;
  return op;
}

static hal_status_t stream_create(int32_t device, hal_stream_t* out) {
  if (check_device(device)) return HAL_STATUS_INVALID_ARGUMENT;
  stream_t* s = calloc(1, sizeof(stream_t));
  s->device = device;
  pthread_mutex_init(&s->mutex, NULL);
  pthread_cond_init(&s->cond, NULL);
  pthread_create(&s->thread, NULL, worker, s);
  *out = s;
  return ok();
}
static hal_status_t stream_synchronize(hal_stream_t s) {
  pthread_mutex_lock(&s->mutex);
  uint64_t target = s->submitted;
  pthread_mutex_unlock(&s->mutex);
  pthread_mutex_lock(&g_progress_mutex);
  while (s->completed < target) pthread_cond_wait(&g_progress, &g_progress_mutex);
  pthread_mutex_unlock(&g_progress_mutex);
  if (misbehaves("status")) return 42;
  if (misbehaves("not_ready")) return HAL_STATUS_NOT_READY;
  return ok();
}
static hal_status_t stream_destroy(hal_stream_t s) {
  stream_synchronize(s);
  pthread_mutex_lock(&s->mutex);
  s->stop = 1;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->mutex);
  pthread_join(s->thread, NULL);
  free(s);
  return ok();
}
static hal_status_t stream_query(hal_stream_t s) {
  pthread_mutex_lock(&s->mutex);
  uint64_t target = s->submitted;
  pthread_mutex_unlock(&s->mutex);
  ok();
  return completed_of(s) >= target ? HAL_STATUS_OK : HAL_STATUS_NOT_READY;
}
static hal_status_t stream_wait_event(hal_stream_t s, hal_event_t e) {
  pthread_mutex_lock(&g_progress_mutex);
  stream_t* other = e->stream;
  uint64_t seq = e->seq;
  pthread_mutex_unlock(&g_progress_mutex);
  if (!other) return ok();
  op_t* op = new_op(OP_WAIT);
  op->wait_stream = other;
  op->wait_seq = seq;
  enqueue(s, op);
  return ok();
}
static hal_status_t launch_host_func(hal_stream_t s, hal_host_fn fn, void* data) {
  op_t* op = new_op(OP_HOST);
  op->fn = fn;
  op->data = data;
  enqueue(s, op);
  return ok();
}

// --- Events -------------------------------------------------------------------------------------------
static hal_status_t event_create(int32_t device, uint32_t flags, hal_event_t* out) {
  if (check_device(device)) return HAL_STATUS_INVALID_ARGUMENT;
  event_t* e = calloc(1, sizeof(event_t));
  e->flags = flags;
  *out = e;
  return ok();
}
static hal_status_t event_synchronize(hal_event_t e) {
  pthread_mutex_lock(&g_progress_mutex);
  while (e->stream && e->stream->completed < e->seq) pthread_cond_wait(&g_progress, &g_progress_mutex);
  pthread_mutex_unlock(&g_progress_mutex);
  return ok();
}
static hal_status_t event_destroy(hal_event_t e) {
  event_synchronize(e);  // Its marker must not outlive it.
  free(e);
  return ok();
}
static hal_status_t event_record(hal_event_t e, hal_stream_t s) {
  op_t* op = new_op(OP_MARK);
  op->event = e;
  pthread_mutex_lock(&g_progress_mutex);  // Held so the worker cannot complete the mark before seq is set.
  pthread_mutex_lock(&s->mutex);
  op->seq = ++s->submitted;
  op->next = NULL;
  if (s->tail) s->tail->next = op;
  else s->head = op;
  s->tail = op;
  e->stream = s;
  e->seq = op->seq;
  e->timed = 0;
  pthread_cond_signal(&s->cond);
  pthread_mutex_unlock(&s->mutex);
  pthread_mutex_unlock(&g_progress_mutex);
  return ok();
}
static hal_status_t event_query(hal_event_t e) {
  pthread_mutex_lock(&g_progress_mutex);
  int done = !e->stream || e->stream->completed >= e->seq;
  pthread_mutex_unlock(&g_progress_mutex);
  ok();
  return done ? HAL_STATUS_OK : HAL_STATUS_NOT_READY;
}
static hal_status_t event_elapsed_time(hal_event_t start, hal_event_t end, float* out_ms) {
  if (!(start->flags & end->flags & HAL_EVENT_FLAG_TIMING)) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "no timing");
  if (!start->stream || !end->stream) return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "never recorded");
  pthread_mutex_lock(&g_progress_mutex);
  int ready = start->timed && end->timed;
  double ms = end->time_ms - start->time_ms;
  pthread_mutex_unlock(&g_progress_mutex);
  if (!ready) return fail(HAL_STATUS_NOT_READY, 0, "not completed");
  *out_ms = (float)ms;
  return ok();
}

// --- Copies -------------------------------------------------------------------------------------------
static hal_status_t copy(hal_stream_t s, void* dst, const void* src, uint64_t size) {
  op_t* op = new_op(OP_COPY);
  op->dst = dst;
  op->src = src;
  op->size = size;
  enqueue(s, op);
  return ok();
}
static hal_status_t memcpy_peer(hal_stream_t s, void* dst, int32_t dd, const void* src, int32_t sd, uint64_t n) {
  return copy(s, dst, src, n);
}
static hal_status_t memset_async(hal_stream_t s, void* dst, uint8_t value, uint64_t size) {
  op_t* op = new_op(OP_SET);
  op->dst = dst;
  op->value = value;
  op->size = size;
  enqueue(s, op);
  return ok();
}

#ifdef FIXTURE_HALF_OPS
static hal_status_t half_ops_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
  *out_ops = NULL;
  *out_count = 0;
  return ok();
}
#endif

#ifdef FIXTURE_ONE_KERNEL
static const hal_op_t g_ops[] = {{"aten::neg", HAL_DTYPE_BIT(HAL_DTYPE_F32)}};

static hal_status_t one_kernel_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
  *out_ops = g_ops;
  *out_count = 1;
  return ok();
}

typedef struct neg_call_t {
  const float* src;
  float* dst;
  int64_t n;
} neg_call_t;

static void run_neg(void* data) {
  neg_call_t* c = data;
  for (int64_t i = 0; i < c->n; i++) c->dst[i] = -c->src[i] + (float)g_neg_bias;
  free(c);
}

static int contiguous(const hal_tensor_t* t, int64_t* numel) {
  int64_t expected = 1;
  *numel = 1;
  for (int32_t d = t->ndim - 1; d >= 0; d--) {
    if (t->sizes[d] != 1 && t->strides[d] != expected) return 0;
    expected *= t->sizes[d];
  }
  *numel = expected;
  return 1;
}

static hal_status_t one_kernel_launch(hal_stream_t s, uint64_t op, const hal_value_t* args, uint64_t num_args,
                                      const hal_tensor_t* results, uint64_t num_results) {
  if (op != 0 || num_args != 1 || num_results != 1 || args[0].kind != HAL_VALUE_TENSOR) {
    return fail(HAL_STATUS_INVALID_ARGUMENT, 0, "fixture: aten::neg takes one tensor");
  }
  int64_t n = 0, m = 0;
  if (!contiguous(&args[0].u.tensor, &n) || !contiguous(&results[0], &m)) {
    return fail(HAL_STATUS_UNIMPLEMENTED, 0, "fixture: neg of a non-contiguous tensor");
  }
  neg_call_t* c = malloc(sizeof(*c));
  c->src = (const float*)args[0].u.tensor.data + args[0].u.tensor.offset;
  c->dst = (float*)results[0].data + results[0].offset;
  c->n = n;
  op_t* o = new_op(OP_HOST);
  o->fn = run_neg;
  o->data = c;
  enqueue(s, o);
  return ok();
}
#endif

// --- The table ----------------------------------------------------------------------------------------
typedef struct fixture_table_t {
  hal_plugin_api_t api;
#ifdef FIXTURE_NEWER
  void* future_entries[4];  // What a 1.7 plugin appends; a 1.0 loader must ignore them.
#endif
} fixture_table_t;

static fixture_table_t g_table;

#ifndef FIXTURE_NO_ENTRY
HAL_PLUGIN_EXPORT
#endif
const hal_plugin_api_t* hal_plugin_get_api(void) {
#ifdef FIXTURE_NULL_TABLE
  return NULL;
#endif
  hal_plugin_api_t* t = &g_table.api;
  t->struct_size = sizeof(fixture_table_t);
  t->abi_major = FIXTURE_MAJOR;
  t->abi_minor = FIXTURE_MINOR;
#ifdef FIXTURE_ABI10
  t->abi_minor = 0;
  t->struct_size = offsetof(hal_plugin_api_t, recv) + sizeof(void*);
#endif
#ifdef FIXTURE_EXT
  t->extensions = extension_chain();
#endif
#ifdef FIXTURE_ABI11
  t->abi_minor = 1;
  t->struct_size = offsetof(hal_plugin_api_t, kernel_launch) + sizeof(void*);
#endif
#ifdef FIXTURE_NEWER
  t->abi_minor = 7;
  for (int i = 0; i < 4; ++i) g_table.future_entries[i] = (void*)&g_table;
#endif
#ifdef FIXTURE_OLD_TABLE
  t->struct_size = offsetof(hal_plugin_api_t, memcpy_d2d_async) + sizeof(void*);
#endif
#ifdef FIXTURE_BAD_NAME
  t->name = "Bad-Name";
#else
  t->name = FIXTURE_NAME;
#endif
  t->version = "0.0.1-test";
  t->initialize = initialize;
  t->shutdown = shutdown;
  t->get_last_error = get_last_error;
  t->device_count = device_count;
  t->device_get_properties = get_properties;
  t->device_get_memory_info = get_memory_info;
  t->memory_allocate = memory_allocate;
  t->memory_free = memory_free;
  t->stream_create = stream_create;
  t->stream_destroy = stream_destroy;
  t->stream_synchronize = stream_synchronize;
  t->stream_query = stream_query;
  t->stream_wait_event = stream_wait_event;
  t->event_create = event_create;
  t->event_destroy = event_destroy;
  t->event_record = event_record;
  t->event_synchronize = event_synchronize;
  t->event_query = event_query;
  t->event_elapsed_time = event_elapsed_time;
  t->memcpy_h2d_async = copy;
  t->memcpy_d2h_async = copy;
  t->memcpy_d2d_async = copy;
  t->memcpy_peer_async = memcpy_peer;
  t->memset_async = memset_async;
  t->launch_host_func = launch_host_func;
  t->memory_map = memory_map;
  t->memory_unmap = memory_unmap;
#ifdef FIXTURE_HALF_OPS
  t->op_list = half_ops_list;
#endif
#ifdef FIXTURE_ONE_KERNEL
  t->op_list = one_kernel_list;
  t->op_launch = one_kernel_launch;
#endif
#ifdef FIXTURE_MISSING_REQUIRED
  t->stream_query = NULL;
  t->event_query = NULL;
#endif
  return t;
}
