// cuda: the collectives (collective.h) through NCCL, loaded at run time (libnccl.so.2, or $HAL_NCCL_LIBRARY).
//
// hal_plugin_get_api probes for NCCL (a dlopen and dlsym: no device is touched): the collective entries are in
// the table only when every NCCL entry point loaded, so without NCCL they are NULL and HAL bridges the devices
// through the host, as collective.h says.
//
// One hal_comm_t is one ncclComm_t. The ABI's failure model is not NCCL's, so the plugin adds:
//  - comm_init_rank's timeout: ncclCommInitRank runs on a helper thread; when the timeout passes first, the call
//    returns HAL_STATUS_TIMEOUT and the helper aborts the communicator if it ever completes.
//  - the per-collective timeout: after each collective an event is recorded on its stream; a watchdog thread of
//    the communicator polls those events and ncclCommGetAsyncError. A collective not complete within the timeout
//    (or an asynchronous NCCL error) fails its stream with HAL_STATUS_TIMEOUT (HAL_STATUS_DEVICE_ERROR) at the
//    stream's next synchronize (cu_stream_set_fault) and aborts the communicator (ncclCommAbort), which ends the
//    kernels that wait for a dead peer.
//  - comm_abort: the same with HAL_STATUS_ABORTED. After any of these the communicator takes only comm_destroy.
// Data-movement collectives (allgather, broadcast, send, recv) move bytes (ncclUint8), so every dtype works;
// reductions take the dtypes NCCL reduces (f32, f16, bf16, f64, i8, u8, i32, u32, i64, u64).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_plugin.h"

static hal_nccl_api_t g_nccl;
static void* g_nccl_library;

int cu_nccl_probe(void) {
  const char* path = getenv("HAL_NCCL_LIBRARY");
  g_nccl_library = dlopen(path && *path ? path : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (g_nccl_library == NULL) return 0;
#define LOAD(ret, member, symbol, args)                             \
  g_nccl.member = (ret(*) args)dlsym(g_nccl_library, #symbol);      \
  if (g_nccl.member == NULL) return 0;
  HAL_NCCL_FUNCTIONS(LOAD)
#undef LOAD
  return 1;
}

#define COMM_MAGIC 0x4e43434cu  // "NCCL"
#define DEFAULT_TIMEOUT_MS 600000u  // 10 minutes (collective.h: at least 60 s)

typedef struct watch_t {
  CUevent event;
  hal_stream_t stream;
  struct timespec deadline;
  const char* what;
  struct watch_t* next;
} watch_t;

struct hal_comm_s {
  uint32_t magic;
  int32_t device, nranks, rank;
  uint32_t timeout_ms;
  ncclComm_t comm;
  pthread_mutex_t mutex;  // Guards what follows.
  pthread_cond_t cv;
  hal_status_t state;  // OK, or TIMEOUT / ABORTED / DEVICE_ERROR: then only comm_destroy.
  int aborted;         // ncclCommAbort was called (it frees the communicator: no ncclCommDestroy after).
  int stop;
  watch_t* watches;
  pthread_t watchdog;
};

static hal_status_t nccl_fail(ncclResult_t r, const char* call, int32_t device) {
  hal_status_t status = (r == ncclInvalidArgument || r == ncclInvalidUsage) ? HAL_STATUS_INVALID_ARGUMENT
                                                                             : HAL_STATUS_DEVICE_ERROR;
  cu_fail(status, "cuda: %s: NCCL error %d: %s (device %d)", call, (int)r, g_nccl.ncclGetErrorString(r), (int)device);
  cu_set_native(r);
  return status;
}

static void after_ms(struct timespec* t, uint32_t ms) {
  clock_gettime(CLOCK_REALTIME, t);
  t->tv_sec += ms / 1000;
  t->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t->tv_nsec >= 1000000000L) t->tv_sec++, t->tv_nsec -= 1000000000L;
}

static int passed(const struct timespec* deadline) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec > deadline->tv_sec || (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

// Fails the communicator (caller holds its mutex): every stream with a collective still running learns
// |status| at its next synchronize, before the abort lets those collectives end, then NCCL aborts.
static void fail_comm(hal_comm_t c, hal_status_t status, const char* why) {
  if (c->state != HAL_STATUS_OK) return;
  c->state = status;
  char message[512];
  for (watch_t* w = c->watches; w; w = w->next) {
    if (g_cu.cuEventQuery(w->event) == CUDA_SUCCESS) continue;
    snprintf(message, sizeof(message), "cuda: a queued %s of rank %d of %d (device %d) %s", w->what, (int)c->rank,
             (int)c->nranks, (int)c->device, why);
    cu_stream_set_fault(w->stream, status, message);
  }
  if (!c->aborted) {
    c->aborted = 1;
    g_nccl.ncclCommAbort(c->comm);
  }
}

static void* watchdog_main(void* arg) {
  hal_comm_t c = arg;
  cu_bind(c->device);
  pthread_mutex_lock(&c->mutex);
  while (!c->stop || c->watches) {
    struct timespec tick;
    after_ms(&tick, 10);
    pthread_cond_timedwait(&c->cv, &c->mutex, &tick);
    for (watch_t** p = &c->watches; *p;) {
      watch_t* w = *p;
      if (g_cu.cuEventQuery(w->event) != CUDA_ERROR_NOT_READY) {  // Done (or failed: the stream reports it).
        *p = w->next;
        g_cu.cuEventDestroy(w->event);
        free(w);
        continue;
      }
      if (passed(&w->deadline)) {
        char why[96];
        snprintf(why, sizeof(why), "did not complete within the communicator's timeout (%u ms)", c->timeout_ms);
        fail_comm(c, HAL_STATUS_TIMEOUT, why);
      }
      p = &w->next;
    }
    ncclResult_t async = ncclSuccess;
    if (c->state == HAL_STATUS_OK && !c->aborted && g_nccl.ncclCommGetAsyncError(c->comm, &async) == ncclSuccess &&
        async != ncclSuccess && async != ncclInProgress) {
      char why[256];
      snprintf(why, sizeof(why), "failed: NCCL error %d: %s", (int)async, g_nccl.ncclGetErrorString(async));
      fail_comm(c, HAL_STATUS_DEVICE_ERROR, why);
    }
  }
  pthread_mutex_unlock(&c->mutex);
  return NULL;
}

static hal_status_t cu_comm_get_unique_id(hal_comm_unique_id_t* out_id) {
  if (out_id == NULL) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: comm_get_unique_id: NULL output");
  ncclUniqueId id;
  ncclResult_t r = g_nccl.ncclGetUniqueId(&id);
  if (r != ncclSuccess) return nccl_fail(r, "ncclGetUniqueId", -1);
  memcpy(out_id->bytes, id.internal, sizeof(id.internal));
  return cu_ok();
}

// The helper thread of comm_init_rank: it owns itself (frees |job|) when the caller stopped waiting.
typedef struct init_job_t {
  int32_t device, nranks, rank;
  ncclUniqueId id;
  ncclComm_t comm;
  ncclResult_t result;
  hal_status_t bind_status;
  int done, orphaned;
  pthread_mutex_t mutex;
  pthread_cond_t cv;
} init_job_t;

static void* init_main(void* arg) {
  init_job_t* job = arg;
  job->bind_status = cu_bind(job->device);  // NCCL creates the communicator on the current device.
  ncclComm_t comm = NULL;
  ncclResult_t r = job->bind_status == HAL_STATUS_OK ? g_nccl.ncclCommInitRank(&comm, job->nranks, job->id, job->rank)
                                                     : ncclInvalidUsage;
  pthread_mutex_lock(&job->mutex);
  job->comm = comm;
  job->result = r;
  job->done = 1;
  const int orphaned = job->orphaned;
  pthread_cond_signal(&job->cv);
  pthread_mutex_unlock(&job->mutex);
  if (orphaned) {  // The caller timed out: nobody will use this communicator.
    if (r == ncclSuccess) g_nccl.ncclCommAbort(comm);
    pthread_mutex_destroy(&job->mutex);
    pthread_cond_destroy(&job->cv);
    free(job);
  }
  return NULL;
}

static hal_status_t cu_comm_init_rank(int32_t device, int32_t nranks, const hal_comm_unique_id_t* id, int32_t rank,
                                      const hal_comm_config_t* config, hal_comm_t* out_comm) {
  hal_status_t status = cu_check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (id == NULL || out_comm == NULL || nranks < 1 || rank < 0 || rank >= nranks) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: comm_init_rank: NULL id or output, or rank %d of %d", (int)rank,
                   (int)nranks);
  }
  uint32_t timeout = DEFAULT_TIMEOUT_MS;
  if (config && HAL_STRUCT_HAS_FIELD(config, hal_comm_config_t, timeout_ms) && config->timeout_ms) {
    timeout = config->timeout_ms;
  }
  init_job_t* job = calloc(1, sizeof(*job));
  if (job == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: comm_init_rank: out of host memory");
  job->device = device, job->nranks = nranks, job->rank = rank;
  memcpy(job->id.internal, id->bytes, sizeof(job->id.internal));
  pthread_mutex_init(&job->mutex, NULL);
  pthread_cond_init(&job->cv, NULL);
  pthread_t thread;
  if (pthread_create(&thread, NULL, init_main, job) != 0) {
    free(job);
    return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: comm_init_rank: cannot start a thread");
  }
  pthread_detach(thread);
  struct timespec deadline;
  after_ms(&deadline, timeout);
  pthread_mutex_lock(&job->mutex);
  int rc = 0;
  while (!job->done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&job->cv, &job->mutex, &deadline);
  if (!job->done) {
    job->orphaned = 1;  // The helper frees the job (and aborts a late communicator).
    pthread_mutex_unlock(&job->mutex);
    return cu_fail(HAL_STATUS_TIMEOUT, "cuda: comm_init_rank: rank %d of %d on device %d: the other ranks did not join "
                   "within %u ms", (int)rank, (int)nranks, (int)device, timeout);
  }
  pthread_mutex_unlock(&job->mutex);
  const ncclResult_t r = job->result;
  ncclComm_t comm = job->comm;
  status = job->bind_status;
  pthread_mutex_destroy(&job->mutex);
  pthread_cond_destroy(&job->cv);
  free(job);
  if (status != HAL_STATUS_OK) return cu_bind(device);  // Says why again, on this thread.
  if (r != ncclSuccess) return nccl_fail(r, "ncclCommInitRank", device);
  hal_comm_t c = calloc(1, sizeof(*c));
  if (c == NULL) {
    g_nccl.ncclCommDestroy(comm);
    return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: comm_init_rank: out of host memory");
  }
  c->magic = COMM_MAGIC;
  c->device = device, c->nranks = nranks, c->rank = rank;
  c->timeout_ms = timeout;
  c->comm = comm;
  pthread_mutex_init(&c->mutex, NULL);
  pthread_cond_init(&c->cv, NULL);
  if (pthread_create(&c->watchdog, NULL, watchdog_main, c) != 0) {
    g_nccl.ncclCommDestroy(comm);
    free(c);
    return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: comm_init_rank: cannot start the watchdog thread");
  }
  *out_comm = c;
  return cu_ok();
}

static hal_status_t check_comm(hal_comm_t c) {
  if (c == NULL || c->magic != COMM_MAGIC) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: not a communicator of this plugin");
  return HAL_STATUS_OK;
}

static hal_status_t cu_comm_destroy(hal_comm_t c) {
  hal_status_t status = check_comm(c);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&c->mutex);
  c->stop = 1;  // The watchdog leaves once every watched collective completed (or the timeout aborted them).
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mutex);
  pthread_join(c->watchdog, NULL);
  ncclResult_t r = ncclSuccess;
  if (!c->aborted) {
    cu_bind(c->device);
    r = g_nccl.ncclCommDestroy(c->comm);
  }
  c->magic = 0;
  pthread_mutex_destroy(&c->mutex);
  pthread_cond_destroy(&c->cv);
  const int32_t device = c->device;
  free(c);
  if (r != ncclSuccess) return nccl_fail(r, "ncclCommDestroy", device);
  return cu_ok();
}

static hal_status_t cu_comm_abort(hal_comm_t c) {
  hal_status_t status = check_comm(c);
  if (status != HAL_STATUS_OK) return status;
  pthread_mutex_lock(&c->mutex);
  fail_comm(c, HAL_STATUS_ABORTED, "was aborted (comm_abort)");
  pthread_mutex_unlock(&c->mutex);
  return cu_ok();
}

void cu_collectives_shutdown(void) {}  // Communicators are the caller's: destroyed before shutdown.

// Before a collective: the communicator works, the stream is of its device (bound).
static hal_status_t prepare(hal_comm_t c, hal_stream_t s, const char* what, CUstream* out) {
  hal_status_t status = check_comm(c);
  if (status != HAL_STATUS_OK) return status;
  int32_t device;
  if ((status = cu_stream_get(s, out, &device)) != HAL_STATUS_OK) return status;
  if (device != c->device) {
    return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: %s: the stream is of device %d, the communicator of device %d",
                   what, (int)device, (int)c->device);
  }
  pthread_mutex_lock(&c->mutex);
  status = c->state;
  pthread_mutex_unlock(&c->mutex);
  if (status != HAL_STATUS_OK) {
    return cu_fail(status, "cuda: %s: the communicator %s: it only takes comm_destroy now", what,
                   status == HAL_STATUS_ABORTED ? "was aborted" : status == HAL_STATUS_TIMEOUT ? "timed out" : "failed");
  }
  return HAL_STATUS_OK;
}

// After a collective was queued: the watchdog watches it.
static hal_status_t watch(hal_comm_t c, hal_stream_t s, CUstream cs, ncclResult_t r, const char* what, const char* call) {
  if (r != ncclSuccess && r != ncclInProgress) return nccl_fail(r, call, c->device);
  watch_t* w = calloc(1, sizeof(*w));
  if (w == NULL) return cu_fail(HAL_STATUS_OUT_OF_MEMORY, "cuda: %s: out of host memory", what);
  CUresult e = g_cu.cuEventCreate(&w->event, CU_EVENT_DISABLE_TIMING);
  if (e == CUDA_SUCCESS) e = g_cu.cuEventRecord(w->event, cs);
  if (e != CUDA_SUCCESS) {
    if (w->event) g_cu.cuEventDestroy(w->event);
    free(w);
    return cu_error(e, "cuEventRecord", "watching a queued %s (it is queued)", what);
  }
  w->stream = s;
  w->what = what;
  after_ms(&w->deadline, c->timeout_ms);
  pthread_mutex_lock(&c->mutex);
  w->next = c->watches;
  c->watches = w;
  pthread_mutex_unlock(&c->mutex);
  return cu_ok();
}

// The NCCL dtype and op of a reduction; UNIMPLEMENTED naming both when NCCL cannot reduce it.
static hal_status_t reduction(hal_dtype_t t, hal_reduce_op_t op, const char* what, ncclDataType_t* out_t, ncclRedOp_t* out_op) {
  static const int types[HAL_DTYPE_END] = {
      [HAL_DTYPE_F32] = ncclFloat32 + 1, [HAL_DTYPE_F16] = ncclFloat16 + 1, [HAL_DTYPE_BF16] = ncclBfloat16 + 1,
      [HAL_DTYPE_F64] = ncclFloat64 + 1, [HAL_DTYPE_I8] = ncclInt8 + 1,     [HAL_DTYPE_U8] = ncclUint8 + 1,
      [HAL_DTYPE_I32] = ncclInt32 + 1,   [HAL_DTYPE_I64] = ncclInt64 + 1,   [HAL_DTYPE_U32] = ncclUint32 + 1,
      [HAL_DTYPE_U64] = ncclUint64 + 1};
  if (t < 0 || t >= HAL_DTYPE_END || types[t] == 0) {
    return cu_fail(HAL_STATUS_UNIMPLEMENTED, "cuda: %s: NCCL does not reduce dtype %d", what, (int)t);
  }
  *out_t = types[t] - 1;
  switch (op) {
    case HAL_REDUCE_SUM: *out_op = ncclSum; break;
    case HAL_REDUCE_PROD: *out_op = ncclProd; break;
    case HAL_REDUCE_MIN: *out_op = ncclMin; break;
    case HAL_REDUCE_MAX: *out_op = ncclMax; break;
    case HAL_REDUCE_AVG: *out_op = ncclAvg; break;
    default: return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: %s: unknown reduce op %d", what, (int)op);
  }
  return HAL_STATUS_OK;
}

// Bytes of |count| elements of |t| for the data-movement collectives.
static hal_status_t bytes_of(hal_dtype_t t, uint64_t count, const char* what, size_t* out) {
  const size_t size = hal_dtype_size(t);
  if (size == 0) return cu_fail(HAL_STATUS_INVALID_ARGUMENT, "cuda: %s: unknown dtype %d", what, (int)t);
  *out = (size_t)count * size;
  return HAL_STATUS_OK;
}

static hal_status_t cu_allreduce(hal_comm_t c, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                                 hal_reduce_op_t op, hal_stream_t s) {
  CUstream cs;
  ncclDataType_t t = 0;
  ncclRedOp_t o = 0;
  hal_status_t status = prepare(c, s, "allreduce", &cs);
  if (status == HAL_STATUS_OK) status = reduction(dtype, op, "allreduce", &t, &o);
  if (status != HAL_STATUS_OK) return status;
  return watch(c, s, cs, g_nccl.ncclAllReduce(sendbuf, recvbuf, (size_t)count, t, o, c->comm, cs), "allreduce", "ncclAllReduce");
}

static hal_status_t cu_reduce_scatter(hal_comm_t c, const void* sendbuf, void* recvbuf, uint64_t recv_count,
                                      hal_dtype_t dtype, hal_reduce_op_t op, hal_stream_t s) {
  CUstream cs;
  ncclDataType_t t = 0;
  ncclRedOp_t o = 0;
  hal_status_t status = prepare(c, s, "reduce_scatter", &cs);
  if (status == HAL_STATUS_OK) status = reduction(dtype, op, "reduce_scatter", &t, &o);
  if (status != HAL_STATUS_OK) return status;
  return watch(c, s, cs, g_nccl.ncclReduceScatter(sendbuf, recvbuf, (size_t)recv_count, t, o, c->comm, cs),
               "reduce_scatter", "ncclReduceScatter");
}

static hal_status_t cu_allgather(hal_comm_t c, const void* sendbuf, void* recvbuf, uint64_t send_count,
                                 hal_dtype_t dtype, hal_stream_t s) {
  CUstream cs;
  size_t bytes = 0;
  hal_status_t status = prepare(c, s, "allgather", &cs);
  if (status == HAL_STATUS_OK) status = bytes_of(dtype, send_count, "allgather", &bytes);
  if (status != HAL_STATUS_OK) return status;
  return watch(c, s, cs, g_nccl.ncclAllGather(sendbuf, recvbuf, bytes, ncclUint8, c->comm, cs), "allgather", "ncclAllGather");
}

static hal_status_t cu_broadcast(hal_comm_t c, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                                 int32_t root, hal_stream_t s) {
  CUstream cs;
  size_t bytes = 0;
  hal_status_t status = prepare(c, s, "broadcast", &cs);
  if (status == HAL_STATUS_OK) status = bytes_of(dtype, count, "broadcast", &bytes);
  if (status != HAL_STATUS_OK) return status;
  return watch(c, s, cs, g_nccl.ncclBroadcast(sendbuf, recvbuf, bytes, ncclUint8, root, c->comm, cs), "broadcast",
               "ncclBroadcast");
}

static hal_status_t cu_send(hal_comm_t c, const void* sendbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                            hal_stream_t s) {
  CUstream cs;
  size_t bytes = 0;
  hal_status_t status = prepare(c, s, "send", &cs);
  if (status == HAL_STATUS_OK) status = bytes_of(dtype, count, "send", &bytes);
  if (status != HAL_STATUS_OK) return status;
  return watch(c, s, cs, g_nccl.ncclSend(sendbuf, bytes, ncclUint8, peer, c->comm, cs), "send", "ncclSend");
}

static hal_status_t cu_recv(hal_comm_t c, void* recvbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                            hal_stream_t s) {
  CUstream cs;
  size_t bytes = 0;
  hal_status_t status = prepare(c, s, "recv", &cs);
  if (status == HAL_STATUS_OK) status = bytes_of(dtype, count, "recv", &bytes);
  if (status != HAL_STATUS_OK) return status;
  return watch(c, s, cs, g_nccl.ncclRecv(recvbuf, bytes, ncclUint8, peer, c->comm, cs), "recv", "ncclRecv");
}

void cu_collectives_fill(hal_plugin_api_t* api) {
  api->comm_get_unique_id = cu_comm_get_unique_id;
  api->comm_init_rank = cu_comm_init_rank;
  api->comm_destroy = cu_comm_destroy;
  api->comm_abort = cu_comm_abort;
  api->allreduce = cu_allreduce;
  api->allgather = cu_allgather;
  api->reduce_scatter = cu_reduce_scatter;
  api->broadcast = cu_broadcast;
  api->send = cu_send;
  api->recv = cu_recv;
}
