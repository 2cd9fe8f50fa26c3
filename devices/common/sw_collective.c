// Collectives of the software stream engine (collective.h) between processes of one host, through POSIX
// shared memory: the "native collective library" of the cpu and emu plugins, the role NCCL plays for CUDA.
//
// Clique. The unique id names a fresh shared-memory segment ("/hal-<plugin>-<pid>-<random hex>"). Each rank
// shm_opens it (O_CREAT: whoever comes first creates it), reserves its pages (posix_fallocate, so a full
// /dev/shm fails at init, never with SIGBUS later), maps it, takes its rank slot and waits until every rank
// has joined. The name is unlinked as soon as all have (and on a failed init): from then on the segment
// lives only in the ranks' mappings, so nothing is left in /dev/shm however the ranks end.
//
// Segment layout (offsets from the rank count and the slot size, the same on every rank):
//   header       clique parameters, join counter, failure flag and reason, one {pid, left} per rank;
//   words        futex words, each on its own cache line: progress[rank], and per ordered pair of ranks
//                sent[src][dst] and taken[src][dst];
//   slots        per rank two staging slots of slot_bytes (double buffering);
//   pair slots   per ordered pair two slots of pair_bytes, for send/recv.
//
// Data paths. By default the slots below carry the data. With HAL_SW_COMM_DIRECT=auto (where it works) or =1
// (init fails where it cannot), allreduce, allgather, reduce_scatter and broadcast take the *single-copy* path
// ("direct" below) where every rank may read and write the others' memory with cross-memory attach
// (process_vm_readv / process_vm_writev: same user, not forbidden by a ptrace policy such as Yama), as Open
// MPI's CMA transport does: each rank publishes its buffers' addresses, then reads its part straight out of
// the peers' buffers and writes results straight into theirs, about 2 S of memory traffic per rank for an
// allreduce of S bytes against 5.25 S through the slots at 4 ranks. The ranks agree on it at init (each probes
// every peer). It is not the default because it measured slower: the slots stay in the last-level cache, so
// their extra passes are cheap, while the kernel pins every 4 KiB page of a peer's buffer per call (on the
// 2-core VM of docs/results.md, 4 ranks: 16 MiB 10 ms against 8 ms, 64 MiB 33 ms against 28 ms); it may pay
// where the slots outgrow the cache (many ranks). send/recv always use the pair slots.
//
// Slot path. A collective streams its buffers through the slots in chunks. Chunks are numbered per
// communicator (every rank runs the same collectives in the same order, so the numbers agree); chunk k uses
// slot k % 2 of every rank and has three phases, after each of which a rank advances its progress word:
//   A  copy this rank's part of the chunk into its own slot;
//   B  (reductions) reduce shard |rank| of the chunk across all ranks' slots: every rank reduces 1/n of it,
//      in parallel, in rank order (so every rank gets the same bits);
//   C  copy what this rank receives out of the slots (every shard of every rank's slot as needed).
// Before phase X of chunk k a rank waits until every rank finished the phase before; before writing slot
// k % 2 it waits until every rank finished chunk k - 2 with it. allreduce is A, B (in place in the own
// slot), C; reduce_scatter is A (all blocks), B (straight into recvbuf); allgather is A, C; broadcast is A
// (root only), C. send/recv stream through the pair's two slots with per-pair counters (sent, taken).
//
// Waiting spins briefly, then sleeps on the word with a shared (cross-process) futex, waking every few ms to
// check the collective's deadline, the local abort flag, the clique's failure flag and whether the peer it
// waits for is still alive (kill(pid, 0), a zombie counts as dead; only for ranks in this PID namespace).
// Writers wake sleepers only when the word's waiter count says there are any.
//
// Failure. A collective that times out, finds a peer dead, or is aborted fails its stream (TIMEOUT or
// ABORTED); it also marks the communicator failed, locally and in the segment, so the peers fail promptly
// instead of waiting for their own timeout. After that only comm_destroy is accepted. Each queued
// collective holds a reference to the communicator (released by the engine whether it ran or was skipped),
// so comm_destroy waits for them and then unmaps.
//
// fork(). A child must not use its parent's communicators: every entry refuses them, and comm_destroy
// only frees the child's copy of the memory.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sw_stream.h"

#define FAIL(status, format, ...) sw_plugin.fail((status), "%s: " format, sw_plugin.name, ##__VA_ARGS__)

#define COMM_MAGIC 0x4d4d4f43u           // "COMM": catches a stale or foreign pointer passed as a comm.
#define ID_MAGIC "HAL-SHM-COMM-1"         // Starts every unique id of this implementation.
#define MAX_RANKS 64
#define DEFAULT_TIMEOUT_MS 60000u
// Per rank and buffer: 4 ranks' two slots (16 MiB) stay within a common L3 cache. HAL_SW_COMM_SLOT_BYTES
// overrides it (tests use tiny slots to cross chunk boundaries cheaply).
#define DEFAULT_SLOT_BYTES (2u << 20)
#define PAIR_BYTES_TOTAL (8u << 20)       // All pair slots together, split among the n * n pairs...
#define MAX_PAIR_BYTES (1u << 20)         // ...at most this much each.
#define SPIN_NS 20000u                    // Spin before sleeping: a peer that is running answers sooner...
                                          // ...unless the clique has more ranks than this process has cores:
                                          // then a spinning rank only keeps the one it waits for off a core.
#define SLEEP_SLICE_NS 10000000u          // Sleeps at most 10 ms between checks of deadline, abort, peers.
#define LIVENESS_EVERY_NS 50000000u       // kill(pid, 0) at most every 50 ms.
#define DIRECT_BLOCK_BYTES (128u << 10)   // Single-copy reductions go in blocks: n of them stay in L2.

// ------------------------------------------------------------------------------------------------------
// The shared segment.

typedef struct shm_word_t {  // A futex word and the number of threads sleeping on it.
  _Alignas(64) uint32_t value;
  uint32_t waiters;
} shm_word_t;

typedef struct shm_header_t {
  uint32_t nranks, slot_bytes, pair_bytes;  // Set by the first rank to join; the others must agree.
  shm_word_t joined;                        // How many ranks have joined.
  shm_word_t failed;                        // 0, or 1 + the rank that failed the communicator.
  shm_word_t probed;                        // How many ranks have said whether they reach every peer.
  int32_t failed_status;
  char failed_reason[256];
  struct {
    int32_t pid;        // 0 until the rank joined.
    uint32_t left;      // The rank destroyed its communicator.
    uint64_t pid_space; // Its PID namespace: only a rank of ours can be looked up by pid.
    uint64_t probe;     // The address of a word holding its pid, for the peers' single-copy probe.
    uint32_t direct;    // 0 until probed; 1: it reaches every peer's memory; 2: it does not.
    char why_not[100];  // Why not (direct 2), for HAL_SW_COMM_DIRECT=1's message.
    uint64_t send, recv;  // The buffers of its current single-copy collective (its own addresses).
  } ranks[MAX_RANKS];
} shm_header_t;

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

typedef struct layout_t {
  size_t words, slots, pairs, total;  // Offsets, and the whole size.
} layout_t;

static layout_t layout_of(uint32_t nranks, uint32_t slot_bytes, uint32_t pair_bytes) {
  layout_t l;
  l.words = round_up(sizeof(shm_header_t), 4096);
  l.slots = round_up(l.words + sizeof(shm_word_t) * ((size_t)nranks + 2u * nranks * nranks), 4096);
  l.pairs = l.slots + (size_t)nranks * 2u * slot_bytes;
  l.total = round_up(l.pairs + (size_t)nranks * nranks * 2u * pair_bytes, 4096);
  return l;
}

// ------------------------------------------------------------------------------------------------------
// Communicators.

struct hal_comm_s {
  struct hal_comm_s* next;  // In g_comms.
  uint32_t magic;
  pid_t pid;  // The process that created it (fork()).
  uint64_t pid_space;
  int32_t device, rank, nranks;
  uint64_t timeout_ns;
  char segment[64];
  shm_header_t* header;
  size_t mapped_size;
  shm_word_t* progress;     // [nranks]
  shm_word_t* sent;         // [src * nranks + dst]: chunks src has written for dst.
  shm_word_t* taken;        // [src * nranks + dst]: chunks dst has read from src.
  char* slots;              // Rank r's slot s at slots + (r * 2 + s) * slot_bytes.
  char* pair_slots;         // Pair (src, dst)'s slot s at pair_slots + ((src * n + dst) * 2 + s) * pair_bytes.
  uint32_t slot_bytes, pair_bytes;
  int direct;               // Every rank reaches every other's memory: the single-copy path.
  uint64_t spin_ns;         // How long a wait spins before it sleeps (SPIN_NS, or 0 when oversubscribed).
  int32_t pid_word;         // This process's pid, read by the peers' probe.

  uint64_t next_seq;        // Collectives issued (the "#17" of messages); atomic.
  int refs;                 // The owner and every queued collective; guarded by mutex.
  int destroying;           // comm_destroy was called; guarded by mutex.
  int aborted;              // comm_abort was called; atomic.
  hal_status_t failed;      // The first failure of a collective, and why; guarded by mutex.
  char failed_reason[384];
  pthread_mutex_t mutex;
  pthread_cond_t released;  // refs dropped.

  // Only the collective running now touches these (collectives hold run_mutex, send / recv their own).
  pthread_mutex_t run_mutex, send_mutex, recv_mutex;
  uint32_t chunks;          // Chunks of collectives run so far (the k of the layout comment).
  uint32_t* sent_count;     // [peer]: chunks sent to peer so far.
  uint32_t* received_count; // [peer]: chunks received from peer so far.
};

// Every communicator of this process, so that comm_abort, which may race with comm_destroy on another
// thread, never touches a communicator that is already freed.
static hal_comm_t g_comms;
static pthread_mutex_t g_comms_mutex = PTHREAD_MUTEX_INITIALIZER;

static int is_live(hal_comm_t comm) {  // Call with g_comms_mutex.
  for (hal_comm_t c = g_comms; c != NULL; c = c->next) {
    if (c == comm) return 1;
  }
  return 0;
}

static int comm_failed(hal_comm_t comm, hal_status_t* out_status, char* reason, size_t capacity) {
  pthread_mutex_lock(&comm->mutex);
  hal_status_t status = comm->failed;
  if (status != HAL_STATUS_OK && reason != NULL) snprintf(reason, capacity, "%s", comm->failed_reason);
  pthread_mutex_unlock(&comm->mutex);
  if (out_status) *out_status = status;
  return status != HAL_STATUS_OK;
}

// Marks |comm| failed with |reason| (first failure wins), and the clique too so the peers stop waiting.
static void mark_failed(hal_comm_t comm, hal_status_t status, const char* reason, int tell_peers) {
  pthread_mutex_lock(&comm->mutex);
  if (comm->failed == HAL_STATUS_OK) {
    comm->failed = status;
    snprintf(comm->failed_reason, sizeof(comm->failed_reason), "%.383s", reason);
  }
  pthread_mutex_unlock(&comm->mutex);
  if (!tell_peers) return;
  uint32_t expected = 0;
  if (__atomic_compare_exchange_n(&comm->header->failed.value, &expected, (uint32_t)comm->rank + 1, 0,
                                  __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    snprintf(comm->header->failed_reason, sizeof(comm->header->failed_reason), "%.255s", reason);
    __atomic_store_n(&comm->header->failed_status, status, __ATOMIC_RELEASE);
  }
}

// ------------------------------------------------------------------------------------------------------
// Futex waiting.

static void futex_wake_all(uint32_t* word) { syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0); }

static void futex_sleep(uint32_t* word, uint32_t expected, uint64_t ns) {
  struct timespec t = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
  syscall(SYS_futex, word, FUTEX_WAIT, expected, &t, NULL, 0);  // Shared: not FUTEX_PRIVATE_FLAG.
}

static void signal_word(shm_word_t* word, uint32_t value) {
  __atomic_store_n(&word->value, value, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&word->waiters, __ATOMIC_SEQ_CST) != 0) futex_wake_all(&word->value);
}

// Wakes every sleeper of the clique (abort): each then looks at the flags.
static void wake_everyone(hal_comm_t comm) {
  futex_wake_all(&comm->header->joined.value);
  for (int32_t r = 0; r < comm->nranks; r++) futex_wake_all(&comm->progress[r].value);
  for (int32_t p = 0; p < comm->nranks * comm->nranks; p++) {
    futex_wake_all(&comm->sent[p].value);
    futex_wake_all(&comm->taken[p].value);
  }
}

static int reached(uint32_t value, uint32_t target) { return (int32_t)(value - target) >= 0; }

// The calling process's PID namespace (0 where it cannot be read): ranks in other containers sharing
// /dev/shm have pids that mean nothing here.
static uint64_t pid_space(void) {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

// A rank is gone when its process no longer exists or is a zombie (killed, not yet reaped by its parent).
static int process_gone(pid_t pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) return 1;
  char path[64], stat[256];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE* f = fopen(path, "r");
  if (f == NULL) return 0;  // No /proc: trust kill().
  size_t n = fread(stat, 1, sizeof(stat) - 1, f);
  fclose(f);
  stat[n] = '\0';
  const char* state = strrchr(stat, ')');  // "pid (comm) S ...": the command may contain spaces.
  return state != NULL && (state[1] == ' ') && (state[2] == 'Z' || state[2] == 'X');
}

// What a collective is doing, for messages: "emu: allreduce #17 (4194304 x f32, sum), rank 1 of 4".
typedef struct wait_ctx_t {
  hal_comm_t comm;
  const char* what;
  uint64_t start_ns, deadline_ns;
} wait_ctx_t;

// Fails the collective described by |ctx| with |status| and marks the communicator failed.
__attribute__((format(printf, 3, 4)))
static hal_status_t fail_collective(const wait_ctx_t* ctx, hal_status_t status, const char* format, ...) {
  char why[320];
  va_list args;
  va_start(args, format);
  vsnprintf(why, sizeof(why), format, args);
  va_end(args);
  char message[512];
  snprintf(message, sizeof(message), "%s: %s", ctx->what, why);
  mark_failed(ctx->comm, status, message, 1);
  return sw_plugin.fail(status, "%s", message);
}

// Why the collective must stop now, or OK: aborted here, failed by a peer, past the deadline, or |peer| gone.
static hal_status_t check_wait(const wait_ctx_t* ctx, int32_t peer, uint64_t now, uint64_t* next_liveness) {
  hal_comm_t comm = ctx->comm;
  if (__atomic_load_n(&comm->aborted, __ATOMIC_ACQUIRE)) {
    return fail_collective(ctx, HAL_STATUS_ABORTED, "aborted (comm_abort on this rank)");
  }
  hal_status_t failed;
  char reason[384];
  if (comm_failed(comm, &failed, reason, sizeof(reason))) {  // Another collective of this rank failed.
    return sw_plugin.fail(failed, "%s: %s", ctx->what, reason);
  }
  uint32_t by = __atomic_load_n(&comm->header->failed.value, __ATOMIC_ACQUIRE);
  if (by != 0 && (int32_t)by - 1 != comm->rank) {
    const hal_status_t status = __atomic_load_n(&comm->header->failed_status, __ATOMIC_ACQUIRE);
    if (status != HAL_STATUS_OK) {  // OK: its reason is being written; the next check reads both.
      return fail_collective(ctx, status, "rank %u %s the communicator (%.200s)", by - 1,
                             status == HAL_STATUS_ABORTED ? "aborted" : "failed", comm->header->failed_reason);
    }
  }
  const pid_t pid = comm->header->ranks[peer].pid;
  if (now >= ctx->deadline_ns) {
    return fail_collective(ctx, HAL_STATUS_TIMEOUT, "timed out after %.1f s waiting for rank %d (pid %d)",
                           (double)(now - ctx->start_ns) / 1e9, peer, (int)pid);
  }
  if (now >= *next_liveness) {
    *next_liveness = now + LIVENESS_EVERY_NS;
    if (__atomic_load_n(&comm->header->ranks[peer].left, __ATOMIC_ACQUIRE)) {
      return fail_collective(ctx, HAL_STATUS_TIMEOUT, "rank %d (pid %d) destroyed its communicator while this "
                             "rank waited for it (%.1f s)", peer, (int)pid, (double)(now - ctx->start_ns) / 1e9);
    }
    if (comm->header->ranks[peer].pid_space == comm->pid_space && process_gone(pid)) {
      return fail_collective(ctx, HAL_STATUS_TIMEOUT, "rank %d (pid %d) died while this rank waited for it "
                             "(%.1f s)", peer, (int)pid, (double)(now - ctx->start_ns) / 1e9);
    }
  }
  return HAL_STATUS_OK;
}

// Waits until |word| (written by rank |peer|) reaches |target|.
static hal_status_t wait_word(const wait_ctx_t* ctx, shm_word_t* word, uint32_t target, int32_t peer) {
  if (reached(__atomic_load_n(&word->value, __ATOMIC_ACQUIRE), target)) return HAL_STATUS_OK;
  const uint64_t spin_until = sw_now_ns() + ctx->comm->spin_ns;
  for (unsigned i = 0;; i++) {
    if (reached(__atomic_load_n(&word->value, __ATOMIC_ACQUIRE), target)) return HAL_STATUS_OK;
    if ((i & 63) == 0 && sw_now_ns() >= spin_until) break;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  uint64_t next_liveness = sw_now_ns() + LIVENESS_EVERY_NS;  // A peer merely late costs no system calls.
  for (;;) {
    const uint64_t now = sw_now_ns();
    hal_status_t status = check_wait(ctx, peer, now, &next_liveness);
    if (status != HAL_STATUS_OK) return status;
    __atomic_add_fetch(&word->waiters, 1, __ATOMIC_SEQ_CST);
    uint32_t value = __atomic_load_n(&word->value, __ATOMIC_SEQ_CST);
    if (!reached(value, target)) {
      uint64_t left = ctx->deadline_ns > now ? ctx->deadline_ns - now : 0;
      futex_sleep(&word->value, value, left < SLEEP_SLICE_NS ? left + 1 : SLEEP_SLICE_NS);
    }
    __atomic_sub_fetch(&word->waiters, 1, __ATOMIC_SEQ_CST);
    if (reached(__atomic_load_n(&word->value, __ATOMIC_ACQUIRE), target)) return HAL_STATUS_OK;
  }
}

// Waits until every rank's progress reached |target|.
static hal_status_t wait_all(const wait_ctx_t* ctx, uint32_t target) {
  for (int32_t r = 0; r < ctx->comm->nranks; r++) {
    hal_status_t status = wait_word(ctx, &ctx->comm->progress[r], target, r);
    if (status != HAL_STATUS_OK) return status;
  }
  return HAL_STATUS_OK;
}

// ------------------------------------------------------------------------------------------------------
// Data types and reductions.

static const struct {
  const char* name;
  size_t size;
} g_dtypes[HAL_DTYPE_COUNT] = {
    [HAL_DTYPE_F32] = {"f32", 4}, [HAL_DTYPE_F16] = {"f16", 2}, [HAL_DTYPE_BF16] = {"bf16", 2},
    [HAL_DTYPE_F64] = {"f64", 8}, [HAL_DTYPE_F8E4M3] = {"f8e4m3", 1}, [HAL_DTYPE_I8] = {"i8", 1},
    [HAL_DTYPE_U8] = {"u8", 1},   [HAL_DTYPE_I32] = {"i32", 4},       [HAL_DTYPE_I64] = {"i64", 8},
};
static const char* const g_op_names[] = {"sum", "prod", "min", "max", "avg"};

static uint32_t bits_of(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return bits;
}

static float float_of(uint32_t bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return float_of(sign | 0x7f800000u | (mantissa << 13));  // Inf, NaN.
  if (exponent != 0) return float_of(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  return float_of(sign | bits_of((float)mantissa * (1.0f / 16777216.0f)));  // Zero, subnormal: exact in f32.
}

static uint16_t float_to_half(float f) {  // Rounds to nearest even.
  const uint32_t bits = bits_of(f), abs = bits & 0x7fffffffu;
  const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN, Inf.
  if (abs >= 0x477ff000u) return sign | 0x7c00u;                                   // Rounds past 65504.
  if (abs < 0x38800000u) {  // Subnormal or zero in f16: round |f| * 2^24 to an integer, nearest even.
    return sign | (uint16_t)nearbyintf(float_of(abs) * 16777216.0f);
  }
  const uint32_t mantissa = abs & 0x7fffffu, exponent = (abs >> 23) - 112u;
  uint32_t h = (exponent << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;  // A carry into the exponent is right too.
  return sign | (uint16_t)h;
}

static float bf16_to_float(uint16_t b) { return float_of((uint32_t)b << 16); }

static uint16_t float_to_bf16(float f) {  // Rounds to nearest even.
  const uint32_t bits = bits_of(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);  // Quiet NaN.
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

#define LOAD_SAME(x) (x)
#define STORE_SAME(T) (T)
// Floats: reduce in ACC; min/max propagate NaN as torch does.
#define FMIN(a, b) ((a) != (a) || (a) < (b) ? (a) : (b))
#define FMAX(a, b) ((a) != (a) || (a) > (b) ? (a) : (b))
// Integers reduce in int64 with wrapping sums and products (unsigned arithmetic), as numpy does per dtype.
#define IADD(a, b) ((int64_t)((uint64_t)(a) + (uint64_t)(b)))
#define IMUL(a, b) ((int64_t)((uint64_t)(a) * (uint64_t)(b)))
#define IMIN(a, b) ((a) < (b) ? (a) : (b))
#define IMAX(a, b) ((a) > (b) ? (a) : (b))
#define FADD(a, b) ((a) + (b))
#define FMUL(a, b) ((a) * (b))

#define REDUCE_LOOP(F, ACC, LOAD)                                           \
  do {                                                                      \
    for (size_t i = 0; i < m; i++) acc[i] = F(acc[i], (ACC)LOAD(s[i]));     \
  } while (0)
// dst[i] = op over r of srcs[r][i], for i < count, reduced in rank order in blocks of ACC on the stack.
#define REDUCE_KERNEL(NAME, T, ACC, LOAD, STORE, ADD, MUL, MIN, MAX)                                   \
  static void NAME(void* dst, const void* const* srcs, int32_t nsrcs, size_t count, hal_reduce_op_t op) { \
    ACC acc[512];                                                                                      \
    for (size_t base = 0; base < count; base += 512) {                                                 \
      const size_t m = count - base < 512 ? count - base : 512;                                        \
      const T* s = (const T*)srcs[0] + base;                                                           \
      for (size_t i = 0; i < m; i++) acc[i] = (ACC)LOAD(s[i]);                                         \
      for (int32_t r = 1; r < nsrcs; r++) {                                                            \
        s = (const T*)srcs[r] + base;                                                                  \
        switch (op) {                                                                                  \
          case HAL_REDUCE_SUM: case HAL_REDUCE_AVG: REDUCE_LOOP(ADD, ACC, LOAD); break;                           \
          case HAL_REDUCE_PROD: REDUCE_LOOP(MUL, ACC, LOAD); break;                                               \
          case HAL_REDUCE_MIN: REDUCE_LOOP(MIN, ACC, LOAD); break;                                                \
          default: REDUCE_LOOP(MAX, ACC, LOAD); break;                                                            \
        }                                                                                              \
      }                                                                                                \
      if (op == HAL_REDUCE_AVG) {                                                                      \
        for (size_t i = 0; i < m; i++) acc[i] = acc[i] / (ACC)nsrcs;                                   \
      }                                                                                                \
      T* d = (T*)dst + base;                                                                           \
      for (size_t i = 0; i < m; i++) d[i] = STORE(acc[i]);                                             \
    }                                                                                                  \
  }

REDUCE_KERNEL(reduce_f32, float, float, LOAD_SAME, STORE_SAME(float), FADD, FMUL, FMIN, FMAX)
REDUCE_KERNEL(reduce_f64, double, double, LOAD_SAME, STORE_SAME(double), FADD, FMUL, FMIN, FMAX)
REDUCE_KERNEL(reduce_f16, uint16_t, float, half_to_float, float_to_half, FADD, FMUL, FMIN, FMAX)
REDUCE_KERNEL(reduce_bf16, uint16_t, float, bf16_to_float, float_to_bf16, FADD, FMUL, FMIN, FMAX)
REDUCE_KERNEL(reduce_i8, int8_t, int64_t, LOAD_SAME, STORE_SAME(int8_t), IADD, IMUL, IMIN, IMAX)
REDUCE_KERNEL(reduce_u8, uint8_t, int64_t, LOAD_SAME, STORE_SAME(uint8_t), IADD, IMUL, IMIN, IMAX)
REDUCE_KERNEL(reduce_i32, int32_t, int64_t, LOAD_SAME, STORE_SAME(int32_t), IADD, IMUL, IMIN, IMAX)
REDUCE_KERNEL(reduce_i64, int64_t, int64_t, LOAD_SAME, STORE_SAME(int64_t), IADD, IMUL, IMIN, IMAX)

typedef void (*reduce_fn)(void* dst, const void* const* srcs, int32_t nsrcs, size_t count, hal_reduce_op_t op);
static const reduce_fn g_reduce[HAL_DTYPE_COUNT] = {
    [HAL_DTYPE_F32] = reduce_f32, [HAL_DTYPE_F16] = reduce_f16, [HAL_DTYPE_BF16] = reduce_bf16,
    [HAL_DTYPE_F64] = reduce_f64, [HAL_DTYPE_I8] = reduce_i8,   [HAL_DTYPE_U8] = reduce_u8,
    [HAL_DTYPE_I32] = reduce_i32, [HAL_DTYPE_I64] = reduce_i64,  // f8e4m3: data movement only.
};

// ------------------------------------------------------------------------------------------------------
// Unique ids.

typedef struct id_layout_t {  // What the 128 bytes hold.
  char magic[16];
  char plugin[16];
  char segment[64];
} id_layout_t;
_Static_assert(sizeof(id_layout_t) <= HAL_COMM_UNIQUE_ID_BYTES, "the id must fit");

hal_status_t sw_comm_get_unique_id(hal_comm_unique_id_t* out_id) {
  if (out_id == NULL) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_get_unique_id: out_id is NULL");
  uint64_t random;
  if (getrandom(&random, sizeof(random), 0) != (ssize_t)sizeof(random)) {
    random = sw_now_ns() ^ ((uint64_t)getpid() << 32);
  }
  id_layout_t id;
  memset(&id, 0, sizeof(id));
  snprintf(id.magic, sizeof(id.magic), "%s", ID_MAGIC);
  snprintf(id.plugin, sizeof(id.plugin), "%s", sw_plugin.name);
  snprintf(id.segment, sizeof(id.segment), "/hal-%s-%d-%016llx", sw_plugin.name, (int)getpid(),
           (unsigned long long)random);
  memset(out_id, 0, sizeof(*out_id));
  memcpy(out_id->bytes, &id, sizeof(id));
  return sw_plugin.ok();
}

// The segment name in |id|, or fails: ids of another plugin or of nothing at all are refused.
static hal_status_t parse_id(const hal_comm_unique_id_t* id, char* segment) {
  if (id == NULL) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: unique id is NULL");
  id_layout_t parsed;
  memcpy(&parsed, id->bytes, sizeof(parsed));
  if (memcmp(parsed.magic, ID_MAGIC, sizeof(ID_MAGIC)) != 0 || memchr(parsed.plugin, 0, 16) == NULL ||
      memchr(parsed.segment, 0, 64) == NULL) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: the unique id is not one of comm_get_unique_id");
  }
  if (strcmp(parsed.plugin, sw_plugin.name) != 0) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: the unique id belongs to plugin '%s', not '%s'",
                parsed.plugin, sw_plugin.name);
  }
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "/hal-%s-", sw_plugin.name);
  const size_t length = strlen(parsed.segment);
  if (strncmp(parsed.segment, prefix, strlen(prefix)) != 0 ||
      strspn(parsed.segment + 1, "abcdefghijklmnopqrstuvwxyz0123456789_-") != length - 1) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: the unique id names no segment of this plugin");
  }
  memcpy(segment, parsed.segment, length + 1);
  return HAL_STATUS_OK;
}

// ------------------------------------------------------------------------------------------------------
// Joining a clique.

// The slot size: HAL_SW_COMM_SLOT_BYTES (4KiB..256MiB, the same on every rank) or the default; 0 if malformed.
static uint32_t slot_bytes_setting(void) {
  const char* text = getenv("HAL_SW_COMM_SLOT_BYTES");
  if (text == NULL || text[0] == '\0') return DEFAULT_SLOT_BYTES;
  const uint64_t bytes = sw_parse_size(text);
  return bytes >= 4096 && bytes <= (256u << 20) ? (uint32_t)round_up(bytes, 64) : 0;
}

static void free_comm(hal_comm_t comm) {
  if (comm->header != NULL) munmap(comm->header, comm->mapped_size);
  pthread_mutex_destroy(&comm->mutex);
  pthread_cond_destroy(&comm->released);
  pthread_mutex_destroy(&comm->run_mutex);
  pthread_mutex_destroy(&comm->send_mutex);
  pthread_mutex_destroy(&comm->recv_mutex);
  free(comm->sent_count);  // received_count shares its allocation.
  comm->magic = 0;
  free(comm);
}

// Claims |key| in the header (0 -> mine) or checks that it already holds mine.
static int agree(uint32_t* key, uint32_t mine, uint32_t* theirs) {
  uint32_t expected = 0;
  if (__atomic_compare_exchange_n(key, &expected, mine, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return 1;
  *theirs = expected;
  return expected == mine;
}

// Maps the segment and takes |comm->rank|'s slot; fails naming what disagrees. |*out_joined| on success.
static hal_status_t join(hal_comm_t comm) {
  const layout_t l = layout_of((uint32_t)comm->nranks, comm->slot_bytes, comm->pair_bytes);
  int fd = shm_open(comm->segment, O_RDWR | O_CREAT, 0600);
  if (fd < 0) {
    int err = errno;
    return FAIL(HAL_STATUS_DEVICE_ERROR, "comm_init_rank: shm_open(%s) failed: %s (errno %d)", comm->segment,
                strerror(err), err);
  }
  // Reserve every page now (fallocate never shrinks, so ranks that disagree on the size cannot truncate it).
  int err = posix_fallocate(fd, 0, (off_t)l.total);
  if (err != 0) {
    close(fd);
    return FAIL(err == ENOSPC ? HAL_STATUS_OUT_OF_MEMORY : HAL_STATUS_DEVICE_ERROR,
                "comm_init_rank: cannot reserve %zu bytes of shared memory in /dev/shm for %s: %s (errno %d)",
                l.total, comm->segment, strerror(err), err);
  }
  void* base = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  err = errno;
  close(fd);
  if (base == MAP_FAILED) {
    return FAIL(HAL_STATUS_OUT_OF_MEMORY, "comm_init_rank: mapping %zu bytes of %s failed: %s (errno %d)", l.total,
                comm->segment, strerror(err), err);
  }
  comm->header = base;
  comm->mapped_size = l.total;
  comm->progress = (shm_word_t*)((char*)base + l.words);
  comm->sent = comm->progress + comm->nranks;
  comm->taken = comm->sent + comm->nranks * comm->nranks;
  comm->slots = (char*)base + l.slots;
  comm->pair_slots = (char*)base + l.pairs;

  shm_header_t* h = comm->header;
  uint32_t theirs = 0;
  if (!agree(&h->nranks, (uint32_t)comm->nranks, &theirs)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: rank %d says nranks is %d, but the ranks that "
                "joined %s first say %u", comm->rank, comm->nranks, comm->segment, theirs);
  }
  if (!agree(&h->slot_bytes, comm->slot_bytes, &theirs) || !agree(&h->pair_bytes, comm->pair_bytes, &theirs)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: rank %d uses %u-byte slots, the ranks that joined "
                "first %u (set HAL_SW_COMM_SLOT_BYTES alike on every rank)", comm->rank, comm->slot_bytes,
                h->slot_bytes);
  }
  int32_t expected = 0;
  if (!__atomic_compare_exchange_n(&h->ranks[comm->rank].pid, &expected, (int32_t)comm->pid, 0, __ATOMIC_SEQ_CST,
                                   __ATOMIC_SEQ_CST)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: rank %d of %s is taken twice: by pid %d and by pid "
                "%d (this process)", comm->rank, comm->segment, (int)expected, (int)comm->pid);
  }
  h->ranks[comm->rank].pid_space = comm->pid_space;  // Before the join is counted, which publishes them.
  comm->pid_word = (int32_t)comm->pid;
  h->ranks[comm->rank].probe = (uint64_t)(uintptr_t)&comm->pid_word;
  signal_word(&h->joined, __atomic_add_fetch(&h->joined.value, 1, __ATOMIC_SEQ_CST));
  return HAL_STATUS_OK;
}

// Waits until |word| counts every rank (|phase| "join": joined; "probe": said whether it reaches the others),
// or fails naming the ranks still missing.
static hal_status_t wait_counted(hal_comm_t comm, shm_word_t* word, const char* phase) {
  shm_header_t* h = comm->header;
  const int joining = strcmp(phase, "join") == 0;
  const uint64_t start = sw_now_ns(), deadline = start + comm->timeout_ns;
  for (;;) {
    uint32_t counted = __atomic_load_n(&word->value, __ATOMIC_ACQUIRE);
    if (counted >= (uint32_t)comm->nranks) return HAL_STATUS_OK;
    const uint64_t now = sw_now_ns();
    const uint32_t by = __atomic_load_n(&h->failed.value, __ATOMIC_ACQUIRE);
    if (by != 0) {
      const hal_status_t status = __atomic_load_n(&h->failed_status, __ATOMIC_ACQUIRE);
      return FAIL(status != HAL_STATUS_OK ? status : HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: rank %d of %d: "
                  "a rank could not join (%.300s)", comm->rank, comm->nranks, h->failed_reason);
    }
    if (now >= deadline) {
      char missing[256] = "";
      size_t used = 0;
      for (int32_t r = 0; r < comm->nranks && used < sizeof(missing) - 16; r++) {
        const int absent = joining ? __atomic_load_n(&h->ranks[r].pid, __ATOMIC_ACQUIRE) == 0
                                   : __atomic_load_n(&h->ranks[r].direct, __ATOMIC_ACQUIRE) == 0;
        if (absent) used += (size_t)snprintf(missing + used, sizeof(missing) - used, "%s%d", used ? ", " : "", r);
      }
      return FAIL(HAL_STATUS_TIMEOUT, "comm_init_rank: rank %d of %d timed out after %.1f s waiting for rank(s) "
                  "%s to %s (%u of %d did)", comm->rank, comm->nranks, (double)(now - start) / 1e9, missing,
                  joining ? "join" : "finish joining", counted, comm->nranks);
    }
    __atomic_add_fetch(&word->waiters, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&word->value, __ATOMIC_SEQ_CST) == counted) {
      futex_sleep(&word->value, counted, deadline - now < SLEEP_SLICE_NS ? deadline - now + 1 : SLEEP_SLICE_NS);
    }
    __atomic_sub_fetch(&word->waiters, 1, __ATOMIC_SEQ_CST);
  }
}

// Moves |bytes| between this process's |local| and |remote| in process |pid| (cross-memory attach): 0, or the
// errno (ESRCH: the process is gone; EPERM: not allowed to reach it; EFAULT: not mapped there).
static int peer_io(pid_t pid, void* local, uint64_t remote, size_t bytes, int write) {
  while (bytes > 0) {
    struct iovec l = {.iov_base = local, .iov_len = bytes}, r = {.iov_base = (void*)(uintptr_t)remote, .iov_len = bytes};
    const ssize_t moved = write ? process_vm_writev(pid, &l, 1, &r, 1, 0) : process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (moved <= 0) return moved < 0 ? errno : EIO;
    local = (char*)local + moved;
    remote += (uint64_t)moved;
    bytes -= (size_t)moved;
  }
  return 0;
}

// HAL_SW_COMM_DIRECT: 0 (unset, empty or "0") off, 1 required, 2 ("auto") where it works; -1 malformed.
static int direct_setting(void) {
  const char* text = getenv("HAL_SW_COMM_DIRECT");
  if (text == NULL || text[0] == '\0') return 0;
  if (strcmp(text, "auto") == 0) return 2;
  if (strcmp(text, "0") == 0 || strcmp(text, "1") == 0) return text[0] - '0';
  return -1;
}

// Every rank probes every peer's memory and says whether it reaches all of them; the single-copy path is
// used only if all do (every rank then decides the same).
static hal_status_t agree_on_direct(hal_comm_t comm, int setting) {
  shm_header_t* h = comm->header;
  const int32_t me = comm->rank;
  char why[100] = "";
  if (setting == 0) snprintf(why, sizeof(why), "HAL_SW_COMM_DIRECT is off on rank %d", me);
  for (int32_t r = 0; r < comm->nranks && why[0] == '\0'; r++) {
    if (r == me) continue;
    const pid_t pid = h->ranks[r].pid;
    int32_t seen = 0;
    int err = h->ranks[r].pid_space != comm->pid_space ? -1 : peer_io(pid, &seen, h->ranks[r].probe, sizeof(seen), 0);
    if (err == -1) {
      snprintf(why, sizeof(why), "rank %d is in another PID namespace than rank %d", r, me);
    } else if (err != 0 || seen != (int32_t)pid) {
      snprintf(why, sizeof(why), "rank %d cannot read rank %d's memory (process_vm_readv: %s)", me, r,
               err ? strerror(err) : "wrong value");
    }
  }
  snprintf(h->ranks[me].why_not, sizeof(h->ranks[me].why_not), "%s", why);
  __atomic_store_n(&h->ranks[me].direct, why[0] ? 2u : 1u, __ATOMIC_RELEASE);
  signal_word(&h->probed, __atomic_add_fetch(&h->probed.value, 1, __ATOMIC_SEQ_CST));
  hal_status_t status = wait_counted(comm, &h->probed, "probe");
  if (status != HAL_STATUS_OK) return status;
  comm->direct = 1;
  for (int32_t r = 0; r < comm->nranks && comm->direct; r++) {
    if (__atomic_load_n(&h->ranks[r].direct, __ATOMIC_ACQUIRE) != 1u) {
      comm->direct = 0;
      snprintf(why, sizeof(why), "%s", h->ranks[r].why_not);
    }
  }
  if (setting == 1 && !comm->direct) {
    return FAIL(HAL_STATUS_UNIMPLEMENTED, "comm_init_rank: HAL_SW_COMM_DIRECT=1, but the single-copy path cannot "
                "work here: %s", why);
  }
  return HAL_STATUS_OK;
}

hal_status_t sw_comm_init_rank(int32_t device, int32_t nranks, const hal_comm_unique_id_t* id, int32_t rank,
                               const hal_comm_config_t* config, hal_comm_t* out_comm) {
  hal_status_t status = sw_plugin.check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_comm == NULL) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: out_comm is NULL");
  if (nranks < 1 || nranks > MAX_RANKS) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: nranks %d is not in 1..%d", nranks, MAX_RANKS);
  }
  if (rank < 0 || rank >= nranks) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: rank %d is not in 0..%d", rank, nranks - 1);
  }
  char segment[64];
  status = parse_id(id, segment);
  if (status != HAL_STATUS_OK) return status;
  uint32_t timeout_ms = 0;
  if (config != NULL && HAL_STRUCT_HAS_FIELD(config, hal_comm_config_t, timeout_ms)) timeout_ms = config->timeout_ms;

  const int direct = direct_setting();
  if (direct < 0) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: HAL_SW_COMM_DIRECT='%s' is not 0, 1 or auto",
                getenv("HAL_SW_COMM_DIRECT"));
  }
  const uint32_t slot_bytes = slot_bytes_setting();
  if (slot_bytes == 0) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_init_rank: HAL_SW_COMM_SLOT_BYTES='%s' is not a size in "
                "[4KiB, 256MiB] such as 65536 or 1MiB", getenv("HAL_SW_COMM_SLOT_BYTES"));
  }
  hal_comm_t comm = calloc(1, sizeof(*comm));
  uint32_t* counts = calloc(2 * (size_t)nranks, sizeof(uint32_t));
  if (comm == NULL || counts == NULL) {
    free(comm);
    free(counts);
    return FAIL(HAL_STATUS_OUT_OF_MEMORY, "comm_init_rank: out of host memory");
  }
  comm->magic = COMM_MAGIC;
  comm->pid = getpid();
  comm->pid_space = pid_space();
  comm->device = device;
  comm->rank = rank;
  comm->nranks = nranks;
  comm->timeout_ns = (uint64_t)(timeout_ms ? timeout_ms : DEFAULT_TIMEOUT_MS) * 1000000u;
  cpu_set_t cores;
  const int ncores = sched_getaffinity(0, sizeof(cores), &cores) == 0 ? CPU_COUNT(&cores) : (int)sysconf(_SC_NPROCESSORS_ONLN);
  comm->spin_ns = ncores > 0 && nranks > ncores ? 0 : SPIN_NS;
  snprintf(comm->segment, sizeof(comm->segment), "%s", segment);
  comm->slot_bytes = slot_bytes;
  uint32_t pair_bytes = PAIR_BYTES_TOTAL / (uint32_t)(nranks * nranks * 2);
  comm->pair_bytes = (uint32_t)round_up(pair_bytes > MAX_PAIR_BYTES ? MAX_PAIR_BYTES : pair_bytes, 64);
  comm->refs = 1;
  comm->sent_count = counts;
  comm->received_count = counts + nranks;
  pthread_mutex_init(&comm->mutex, NULL);
  pthread_cond_init(&comm->released, NULL);
  pthread_mutex_init(&comm->run_mutex, NULL);
  pthread_mutex_init(&comm->send_mutex, NULL);
  pthread_mutex_init(&comm->recv_mutex, NULL);

  status = join(comm);
  // A rank that cannot join (it disagrees with the others) tells them, so they fail now, naming why.
  if (status != HAL_STATUS_OK && comm->header != NULL) mark_failed(comm, status, sw_plugin.last_message(), 1);
  if (status == HAL_STATUS_OK) status = wait_counted(comm, &comm->header->joined, "join");
  // All joined (or given up): the name is no longer needed, and must not outlive the ranks.
  shm_unlink(comm->segment);
  if (status == HAL_STATUS_OK) {
    status = agree_on_direct(comm, direct);
    if (status != HAL_STATUS_OK) mark_failed(comm, status, sw_plugin.last_message(), 1);
  }
  if (status != HAL_STATUS_OK) {
    free_comm(comm);
    return status;
  }
  pthread_mutex_lock(&g_comms_mutex);
  comm->next = g_comms;
  g_comms = comm;
  pthread_mutex_unlock(&g_comms_mutex);
  *out_comm = comm;
  return sw_plugin.ok();
}

// ------------------------------------------------------------------------------------------------------
// Destroy and abort.

// OK for a live communicator of this process; |entry| names the call in messages.
static hal_status_t check_comm(hal_comm_t comm, const char* entry) {
  if (comm == NULL || comm->magic != COMM_MAGIC) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: %p is not a communicator of this plugin", entry, (void*)comm);
  }
  if (comm->pid != getpid()) {
    return FAIL(HAL_STATUS_UNAVAILABLE, "%s: the communicator belongs to the parent process (pid %d): after "
                "fork() a child can only destroy it and must create its own", entry, (int)comm->pid);
  }
  return HAL_STATUS_OK;
}

static void comm_release(hal_comm_t comm) {
  pthread_mutex_lock(&comm->mutex);
  comm->refs--;
  pthread_cond_broadcast(&comm->released);
  pthread_mutex_unlock(&comm->mutex);
}

static void forget_comm(hal_comm_t comm) {  // Takes |comm| off g_comms.
  pthread_mutex_lock(&g_comms_mutex);
  for (hal_comm_t* link = &g_comms; *link != NULL; link = &(*link)->next) {
    if (*link == comm) {
      *link = comm->next;
      break;
    }
  }
  pthread_mutex_unlock(&g_comms_mutex);
}

hal_status_t sw_comm_destroy(hal_comm_t comm) {
  if (comm == NULL || comm->magic != COMM_MAGIC) return check_comm(comm, "comm_destroy");
  if (comm->pid != getpid()) {  // A child of fork(): no worker holds it here; free our copy only.
    forget_comm(comm);
    free_comm(comm);
    return sw_plugin.ok();
  }
  pthread_mutex_lock(&comm->mutex);
  if (comm->destroying) {
    pthread_mutex_unlock(&comm->mutex);
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_destroy: the communicator is already being destroyed");
  }
  comm->destroying = 1;  // No collective is queued from now on (queue_collective checks under the mutex).
  comm->refs--;          // The owner's; queued collectives hold theirs until they ran or were skipped.
  while (comm->refs > 0) pthread_cond_wait(&comm->released, &comm->mutex);
  pthread_mutex_unlock(&comm->mutex);
  __atomic_store_n(&comm->header->ranks[comm->rank].left, 1, __ATOMIC_RELEASE);
  forget_comm(comm);
  free_comm(comm);
  return sw_plugin.ok();
}

hal_status_t sw_comm_abort(hal_comm_t comm) {
  pthread_mutex_lock(&g_comms_mutex);  // Held throughout: comm_destroy cannot free |comm| meanwhile.
  if (!is_live(comm)) {
    pthread_mutex_unlock(&g_comms_mutex);
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "comm_abort: %p is not a live communicator of this process",
                (void*)comm);
  }
  __atomic_store_n(&comm->aborted, 1, __ATOMIC_RELEASE);
  char reason[128];
  snprintf(reason, sizeof(reason), "%s: comm_abort on rank %d of %d", sw_plugin.name, comm->rank, comm->nranks);
  mark_failed(comm, HAL_STATUS_ABORTED, reason, 1);
  wake_everyone(comm);
  pthread_mutex_unlock(&g_comms_mutex);
  return sw_plugin.ok();
}

// ------------------------------------------------------------------------------------------------------
// The collectives: arguments checked at the call, work run on the stream.

typedef enum kind_t { ALLREDUCE, ALLGATHER, REDUCE_SCATTER, BROADCAST, SEND, RECV } kind_t;
static const char* const g_kind_names[] = {"allreduce", "allgather", "reduce_scatter", "broadcast", "send", "recv"};

typedef struct coll_args_t {
  hal_comm_t comm;
  kind_t kind;
  uint64_t seq;
  const void* send;
  void* recv;
  uint64_t count;        // Elements: per rank (allgather), per block (reduce_scatter), else of the buffers.
  hal_dtype_t dtype;
  hal_reduce_op_t op;
  int32_t peer;          // Root (broadcast) or peer (send, recv).
  uint64_t send_bytes, recv_bytes;
} coll_args_t;

// "emu: allreduce #17 (4194304 x f32, sum), rank 1 of 4".
static void describe(const coll_args_t* a, char* out, size_t capacity) {
  char detail[64] = "";
  if (a->kind == ALLREDUCE || a->kind == REDUCE_SCATTER) snprintf(detail, sizeof(detail), ", %s", g_op_names[a->op]);
  if (a->kind == BROADCAST) snprintf(detail, sizeof(detail), ", root %d", a->peer);
  if (a->kind == SEND) snprintf(detail, sizeof(detail), " to rank %d", a->peer);
  if (a->kind == RECV) snprintf(detail, sizeof(detail), " from rank %d", a->peer);
  snprintf(out, capacity, "%s: %s #%llu (%llu x %s%s), rank %d of %d", sw_plugin.name, g_kind_names[a->kind],
           (unsigned long long)a->seq, (unsigned long long)a->count, g_dtypes[a->dtype].name, detail, a->comm->rank,
           a->comm->nranks);
}

static char* slot_of(hal_comm_t comm, int32_t rank, uint32_t chunk) {
  return comm->slots + ((size_t)rank * 2u + (chunk & 1u)) * comm->slot_bytes;
}

// One chunk of a collective through the slots (the three phases of the top of this file). |elems| per
// rank's part; |offset| the chunk's first element within that part.
static hal_status_t run_chunk(const wait_ctx_t* ctx, const coll_args_t* a, const char* send, char* recv,
                              uint64_t offset, size_t elems) {
  hal_comm_t comm = a->comm;
  const int32_t n = comm->nranks, me = comm->rank;
  const size_t esize = g_dtypes[a->dtype].size, bytes = elems * esize;
  const uint32_t k = comm->chunks++, step = 3u * k;
  char* mine = slot_of(comm, me, k);
  hal_status_t status = HAL_STATUS_OK;
  if (k >= 2) status = wait_all(ctx, step - 3u);  // Every rank is done with this slot's chunk k - 2.
  if (status != HAL_STATUS_OK) return status;

  sw_pace_t pace = sw_pace_start(comm->device);  // A: this rank's part into its slot.
  if (a->kind == REDUCE_SCATTER) {
    for (int32_t b = 0; b < n; b++) memcpy(mine + (size_t)b * bytes, send + (b * a->count + offset) * esize, bytes);
  } else if (a->kind != BROADCAST || me == a->peer) {
    memcpy(mine, send + offset * esize, bytes);
  }
  sw_pace_device(&pace);
  signal_word(&comm->progress[me], step + 1u);
  if ((status = wait_all(ctx, step + 1u)) != HAL_STATUS_OK) return status;

  pace = sw_pace_start(comm->device);  // B: reduce shard |me| across the slots.
  const void* srcs[MAX_RANKS];
  if (a->kind == ALLREDUCE) {
    const size_t first = elems * (size_t)me / (size_t)n, last = elems * ((size_t)me + 1) / (size_t)n;
    for (int32_t r = 0; r < n; r++) srcs[r] = slot_of(comm, r, k) + first * esize;
    g_reduce[a->dtype](mine + first * esize, srcs, n, last - first, a->op);
  } else if (a->kind == REDUCE_SCATTER) {
    for (int32_t r = 0; r < n; r++) srcs[r] = slot_of(comm, r, k) + (size_t)me * bytes;
    g_reduce[a->dtype](recv + offset * esize, srcs, n, elems, a->op);
  }
  sw_pace_device(&pace);
  signal_word(&comm->progress[me], step + 2u);
  if ((status = wait_all(ctx, step + 2u)) != HAL_STATUS_OK) return status;

  pace = sw_pace_start(comm->device);  // C: what this rank receives, out of the slots.
  if (a->kind == ALLREDUCE) {
    for (int32_t r = 0; r < n; r++) {
      const size_t first = elems * (size_t)r / (size_t)n, last = elems * ((size_t)r + 1) / (size_t)n;
      memcpy(recv + (offset + first) * esize, slot_of(comm, r, k) + first * esize, (last - first) * esize);
    }
  } else if (a->kind == ALLGATHER) {
    for (int32_t r = 0; r < n; r++) memcpy(recv + (r * a->count + offset) * esize, slot_of(comm, r, k), bytes);
  } else if (a->kind == BROADCAST && (me != a->peer || recv + offset * esize != send + offset * esize)) {
    memcpy(recv + offset * esize, slot_of(comm, a->peer, k), bytes);
  }
  sw_pace_device(&pace);
  signal_word(&comm->progress[me], step + 3u);
  return HAL_STATUS_OK;
}

// The single-copy path (top of this file): one chunk number (three progress steps, as a slot chunk) per
// collective, whatever its size. Step 1: every rank's addresses are published and its inputs ready. Then each
// rank reads what it needs straight from the peers' buffers and (allreduce) writes its reduced shard straight
// into theirs. Step 2: every rank is done with every other's buffers, so each may go on.
// Whether the collective must stop before (or while) touching the peers' memory: aborted, failed here or by a
// peer (which may then have freed its buffers or exited), or past its deadline.
static hal_status_t check_clique(const wait_ctx_t* ctx) {
  uint64_t no_liveness_check = UINT64_MAX;
  return check_wait(ctx, ctx->comm->rank, sw_now_ns(), &no_liveness_check);
}

// A peer's memory could not be reached (errno |err|): the clique's own failure if there is one, else this.
static hal_status_t direct_failed(const wait_ctx_t* ctx, int32_t peer, int err) {
  const hal_status_t status = check_clique(ctx);
  if (status != HAL_STATUS_OK) return status;
  const pid_t pid = ctx->comm->header->ranks[peer].pid;
  return fail_collective(ctx, err == ESRCH ? HAL_STATUS_TIMEOUT : HAL_STATUS_DEVICE_ERROR, "%s rank %d (pid %d)%s: %s",
                         err == ESRCH ? "lost" : "cannot reach the memory of", peer, (int)pid,
                         err == ESRCH ? ", which died during the collective" : "", strerror(err));
}

// dst[0, elems) = op over every rank r (in rank order) of rank r's |send| + |offset| elements; with |push|,
// each block is also written into every peer's recvbuf at the same place while it is still in cache.
static hal_status_t reduce_from_peers(const wait_ctx_t* ctx, const coll_args_t* a, const char* send, uint64_t offset,
                                      size_t elems, char* dst, char* scratch, int push) {
  hal_comm_t comm = a->comm;
  const int32_t n = comm->nranks, me = comm->rank;
  const size_t esize = g_dtypes[a->dtype].size, block = DIRECT_BLOCK_BYTES / esize;
  const void* srcs[MAX_RANKS];
  for (size_t done = 0; done < elems; done += block) {
    const size_t m = elems - done < block ? elems - done : block;
    for (int32_t r = 0; r < n; r++) {
      if (r == me) {
        srcs[r] = send + (offset + done) * esize;
        continue;
      }
      char* tmp = scratch + (size_t)r * DIRECT_BLOCK_BYTES;
      const int err = peer_io(comm->header->ranks[r].pid, tmp, comm->header->ranks[r].send + (offset + done) * esize,
                              m * esize, 0);
      if (err != 0) return direct_failed(ctx, r, err);
      srcs[r] = tmp;
    }
    g_reduce[a->dtype](dst + done * esize, srcs, n, m, a->op);
    for (int32_t r = 0; push && r < n; r++) {
      if (r == me) continue;
      const int err = peer_io(comm->header->ranks[r].pid, dst + done * esize,
                              comm->header->ranks[r].recv + (offset + done) * esize, m * esize, 1);
      if (err != 0) return direct_failed(ctx, r, err);
    }
    if (__atomic_load_n(&comm->aborted, __ATOMIC_RELAXED) || __atomic_load_n(&comm->header->failed.value, __ATOMIC_RELAXED)) {
      const hal_status_t status = check_clique(ctx);
      if (status != HAL_STATUS_OK) return status;
    }
  }
  return HAL_STATUS_OK;
}

static hal_status_t run_direct(const wait_ctx_t* ctx, const coll_args_t* a, const char* send, char* recv) {
  hal_comm_t comm = a->comm;
  shm_header_t* h = comm->header;
  const int32_t n = comm->nranks, me = comm->rank;
  const size_t esize = g_dtypes[a->dtype].size, bytes = a->count * esize;
  const uint32_t k = comm->chunks++, step = 3u * k;
  hal_status_t status = HAL_STATUS_OK;
  h->ranks[me].send = (uint64_t)(uintptr_t)send;  // Nobody reads them before step + 1 (see above).
  h->ranks[me].recv = (uint64_t)(uintptr_t)recv;
  signal_word(&comm->progress[me], step + 1u);
  if ((status = wait_all(ctx, step + 1u)) != HAL_STATUS_OK) return status;
  if ((status = check_clique(ctx)) != HAL_STATUS_OK) return status;  // A peer may have given up meanwhile.

  char* scratch = NULL;
  if (a->kind == ALLREDUCE || a->kind == REDUCE_SCATTER) {
    scratch = malloc((size_t)n * DIRECT_BLOCK_BYTES);
    if (scratch == NULL) return fail_collective(ctx, HAL_STATUS_OUT_OF_MEMORY, "out of host memory");
  }
  sw_pace_t pace = sw_pace_start(comm->device);
  if (a->kind == ALLREDUCE) {  // Shard |me|: reduced here, written into every rank's recvbuf.
    const size_t first = a->count * (size_t)me / (size_t)n, last = a->count * ((size_t)me + 1) / (size_t)n;
    status = reduce_from_peers(ctx, a, send, first, last - first, recv + first * esize, scratch, 1);
  } else if (a->kind == REDUCE_SCATTER) {  // Block |me| of every rank's sendbuf.
    status = reduce_from_peers(ctx, a, send, (uint64_t)me * a->count, a->count, recv, scratch, 0);
  } else if (a->kind == ALLGATHER) {
    for (int32_t r = 0; r < n && status == HAL_STATUS_OK; r++) {
      char* to = recv + (size_t)r * bytes;
      if (r == me) {
        if (to != send) memmove(to, send, bytes);
        continue;
      }
      const int err = peer_io(h->ranks[r].pid, to, h->ranks[r].send, bytes, 0);
      if (err != 0) status = direct_failed(ctx, r, err);
    }
  } else if (me == a->peer) {  // BROADCAST, the root.
    if (recv != send) memmove(recv, send, bytes);
  } else {
    const int err = peer_io(h->ranks[a->peer].pid, recv, h->ranks[a->peer].send, bytes, 0);
    if (err != 0) status = direct_failed(ctx, a->peer, err);
  }
  sw_pace_device(&pace);
  free(scratch);
  if (status != HAL_STATUS_OK) return status;
  signal_word(&comm->progress[me], step + 2u);
  if ((status = wait_all(ctx, step + 2u)) != HAL_STATUS_OK) return status;
  signal_word(&comm->progress[me], step + 3u);
  return HAL_STATUS_OK;
}

static hal_status_t run_collective(const wait_ctx_t* ctx, const coll_args_t* a, const char* send, char* recv) {
  const size_t esize = g_dtypes[a->dtype].size;
  // A chunk fills a slot: reduce_scatter puts nranks blocks of it there, the others one part.
  size_t per_chunk = a->comm->slot_bytes / esize / (a->kind == REDUCE_SCATTER ? (size_t)a->comm->nranks : 1u);
  if (a->kind == ALLREDUCE) per_chunk -= per_chunk % (size_t)a->comm->nranks;  // Even shards (any split works).
  pthread_mutex_lock(&a->comm->run_mutex);
  hal_status_t status = HAL_STATUS_OK;
  if (a->comm->direct) {
    status = run_direct(ctx, a, send, recv);
    pthread_mutex_unlock(&a->comm->run_mutex);
    return status;
  }
  for (uint64_t offset = 0; offset < a->count && status == HAL_STATUS_OK; offset += per_chunk) {
    const size_t elems = a->count - offset < per_chunk ? (size_t)(a->count - offset) : per_chunk;
    status = run_chunk(ctx, a, send, recv, offset, elems);
  }
  pthread_mutex_unlock(&a->comm->run_mutex);
  return status;
}

// send / recv: chunk j of the pair (src, dst) goes through the pair's slot j % 2.
static hal_status_t run_point_to_point(const wait_ctx_t* ctx, const coll_args_t* a, const char* send, char* recv) {
  hal_comm_t comm = a->comm;
  const int32_t n = comm->nranks, src = a->kind == SEND ? comm->rank : a->peer;
  const int32_t dst = a->kind == SEND ? a->peer : comm->rank;
  const size_t pair = (size_t)src * (size_t)n + (size_t)dst, total = a->count * g_dtypes[a->dtype].size;
  pthread_mutex_t* mutex = a->kind == SEND ? &comm->send_mutex : &comm->recv_mutex;
  uint32_t* count = a->kind == SEND ? &comm->sent_count[dst] : &comm->received_count[src];
  hal_status_t status = HAL_STATUS_OK;
  pthread_mutex_lock(mutex);
  for (size_t done = 0; done < total && status == HAL_STATUS_OK;) {
    const size_t bytes = total - done < comm->pair_bytes ? total - done : comm->pair_bytes;
    const uint32_t j = *count;
    char* slot = comm->pair_slots + (pair * 2u + (j & 1u)) * comm->pair_bytes;
    if (a->kind == SEND) {
      if (j >= 2) status = wait_word(ctx, &comm->taken[pair], j - 1u, dst);  // Chunk j - 2 was read.
      if (status != HAL_STATUS_OK) break;
      sw_pace_t pace = sw_pace_start(comm->device);
      memcpy(slot, send + done, bytes);
      sw_pace_device(&pace);
      signal_word(&comm->sent[pair], j + 1u);
    } else {
      if ((status = wait_word(ctx, &comm->sent[pair], j + 1u, src)) != HAL_STATUS_OK) break;
      sw_pace_t pace = sw_pace_start(comm->device);
      memcpy(recv + done, slot, bytes);
      sw_pace_device(&pace);
      signal_word(&comm->taken[pair], j + 1u);
    }
    *count = j + 1u;
    done += bytes;
  }
  pthread_mutex_unlock(mutex);
  return status;
}

static hal_status_t run_work(hal_stream_t stream, const void* args) {
  const coll_args_t* a = args;
  hal_comm_t comm = a->comm;
  wait_ctx_t ctx = {.comm = comm, .start_ns = sw_now_ns()};
  ctx.deadline_ns = ctx.start_ns + comm->timeout_ns;
  char what[192];
  describe(a, what, sizeof(what));
  ctx.what = what;
  hal_status_t status;
  char reason[384];
  if (__atomic_load_n(&comm->aborted, __ATOMIC_ACQUIRE)) {
    return sw_plugin.fail(HAL_STATUS_ABORTED, "%s: aborted (comm_abort on this rank)", what);
  }
  if (comm_failed(comm, &status, reason, sizeof(reason))) {
    return sw_plugin.fail(status, "%s: not run, the communicator failed before: %s", what, reason);
  }
  const int32_t device = sw_stream_device(stream);
  void *send = NULL, *recv = NULL;
  status = HAL_STATUS_OK;
  if (a->send_bytes > 0) status = sw_plugin.resolve(device, a->send, a->send_bytes, &send);
  if (status == HAL_STATUS_OK && a->recv_bytes > 0) status = sw_plugin.resolve(device, a->recv, a->recv_bytes, &recv);
  if (status != HAL_STATUS_OK) {  // Freed under the queued collective: the peers must not wait for us.
    char message[512];
    snprintf(message, sizeof(message), "%s: %s", what, sw_plugin.last_message());
    mark_failed(comm, HAL_STATUS_DEVICE_ERROR, message, 1);
    return sw_plugin.fail(HAL_STATUS_DEVICE_ERROR, "%s", message);
  }
  if (a->kind == SEND || a->kind == RECV) return run_point_to_point(&ctx, a, send, recv);
  return run_collective(&ctx, a, send, recv);
}

// The engine calls this once per queued collective, run or skipped. A collective skipped because its stream
// had failed leaves the peers waiting for this rank: the communicator fails, and tells them.
static void release_work(const void* args, int ran) {
  const coll_args_t* a = args;
  if (!ran && a->comm->pid == getpid()) {
    char what[192], message[320];
    describe(a, what, sizeof(what));
    snprintf(message, sizeof(message), "%s: skipped, its stream had failed before it", what);
    mark_failed(a->comm, HAL_STATUS_ABORTED, message, 1);
  }
  comm_release(a->comm);
}

// Checks the arguments of a collective on |stream| now, and queues it.
static hal_status_t queue_collective(coll_args_t a, hal_stream_t stream, int reduces) {
  const char* entry = g_kind_names[a.kind];
  hal_comm_t comm = a.comm;
  hal_status_t status = check_comm(comm, entry);
  if (status != HAL_STATUS_OK) return status;
  char reason[384];
  if (comm_failed(comm, &status, reason, sizeof(reason))) {
    return FAIL(status, "%s: the communicator failed and only accepts comm_destroy: %s", entry, reason);
  }
  if ((status = sw_check_stream(stream)) != HAL_STATUS_OK) return status;
  if (sw_stream_device(stream) != comm->device) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: stream is of device %d, the communicator's device is %d", entry,
                sw_stream_device(stream), comm->device);
  }
  if (a.dtype < 0 || a.dtype >= HAL_DTYPE_COUNT) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: dtype %d is not a hal_dtype_t", entry, a.dtype);
  }
  if (reduces) {
    if (a.op < HAL_REDUCE_SUM || a.op > HAL_REDUCE_AVG) {
      return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: op %d is not a hal_reduce_op_t", entry, a.op);
    }
    if (g_reduce[a.dtype] == NULL) {
      return FAIL(HAL_STATUS_UNIMPLEMENTED, "%s: no %s reduction of dtype %s (it only moves)", entry,
                  g_op_names[a.op], g_dtypes[a.dtype].name);
    }
  }
  if ((a.kind == BROADCAST || a.kind == SEND || a.kind == RECV) && (a.peer < 0 || a.peer >= comm->nranks)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: %s %d is not a rank in 0..%d", entry,
                a.kind == BROADCAST ? "root" : "peer", a.peer, comm->nranks - 1);
  }
  if ((a.kind == SEND || a.kind == RECV) && a.peer == comm->rank) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: peer %d is this rank", entry, a.peer);
  }
  // Buffer sizes in bytes, refusing any that overflow.
  const uint64_t n = (uint64_t)comm->nranks, esize = g_dtypes[a.dtype].size;
  uint64_t bytes, all;
  if (__builtin_mul_overflow(a.count, esize, &bytes) || __builtin_mul_overflow(bytes, n, &all)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: count %llu of %s overflows the size of a buffer", entry,
                (unsigned long long)a.count, g_dtypes[a.dtype].name);
  }
  a.send_bytes = a.kind == RECV || (a.kind == BROADCAST && comm->rank != a.peer) ? 0
                 : a.kind == REDUCE_SCATTER                                       ? all
                                                                                  : bytes;
  a.recv_bytes = a.kind == SEND ? 0 : a.kind == ALLGATHER ? all : bytes;
  void* unused;
  if (a.send_bytes > 0 && (status = sw_plugin.resolve(comm->device, a.send, a.send_bytes, &unused)) != HAL_STATUS_OK) {
    return FAIL(status, "%s: sendbuf: %s", entry, sw_plugin.last_message());
  }
  if (a.recv_bytes > 0 && (status = sw_plugin.resolve(comm->device, a.recv, a.recv_bytes, &unused)) != HAL_STATUS_OK) {
    return FAIL(status, "%s: recvbuf: %s", entry, sw_plugin.last_message());
  }
  if (a.count == 0) return sw_plugin.ok();  // Nothing moves, and nothing is shared: in order trivially.
  pthread_mutex_lock(&comm->mutex);
  const int destroying = comm->destroying;
  if (!destroying) comm->refs++;
  pthread_mutex_unlock(&comm->mutex);
  if (destroying) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "%s: the communicator is being destroyed", entry);
  a.seq = __atomic_add_fetch(&comm->next_seq, 1, __ATOMIC_RELAXED);
  status = sw_enqueue_holding(stream, entry, run_work, release_work, &a, sizeof(a));
  if (status != HAL_STATUS_OK) comm_release(comm);
  return status;
}

hal_status_t sw_allreduce(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                          hal_reduce_op_t op, hal_stream_t stream) {
  const coll_args_t a = {.comm = comm, .kind = ALLREDUCE, .send = sendbuf, .recv = recvbuf, .count = count,
                         .dtype = dtype, .op = op};
  return queue_collective(a, stream, 1);
}

hal_status_t sw_allgather(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t send_count,
                          hal_dtype_t dtype, hal_stream_t stream) {
  const coll_args_t a = {.comm = comm, .kind = ALLGATHER, .send = sendbuf, .recv = recvbuf, .count = send_count,
                         .dtype = dtype};
  return queue_collective(a, stream, 0);
}

hal_status_t sw_reduce_scatter(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t recv_count,
                               hal_dtype_t dtype, hal_reduce_op_t op, hal_stream_t stream) {
  const coll_args_t a = {.comm = comm, .kind = REDUCE_SCATTER, .send = sendbuf, .recv = recvbuf,
                         .count = recv_count, .dtype = dtype, .op = op};
  return queue_collective(a, stream, 1);
}

hal_status_t sw_broadcast(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                          int32_t root, hal_stream_t stream) {
  const coll_args_t a = {.comm = comm, .kind = BROADCAST, .send = sendbuf, .recv = recvbuf, .count = count,
                         .dtype = dtype, .peer = root};
  return queue_collective(a, stream, 0);
}

hal_status_t sw_send(hal_comm_t comm, const void* sendbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                     hal_stream_t stream) {
  const coll_args_t a = {.comm = comm, .kind = SEND, .send = sendbuf, .count = count, .dtype = dtype, .peer = peer};
  return queue_collective(a, stream, 0);
}

hal_status_t sw_recv(hal_comm_t comm, void* recvbuf, uint64_t count, hal_dtype_t dtype, int32_t peer,
                     hal_stream_t stream) {
  const coll_args_t a = {.comm = comm, .kind = RECV, .recv = recvbuf, .count = count, .dtype = dtype, .peer = peer};
  return queue_collective(a, stream, 0);
}
