// A stand-in for libnccl.so.2 (tests/cuda/test_cuda.py): every entry point the cuda plugin loads, succeeding at
// once, except that ncclCommInitRank first sleeps $FAKE_NCCL_INIT_SLEEP_MS (a peer that never joins).
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { char internal[128]; } ncclUniqueId;
static int g_comm;

int ncclGetVersion(int* v) { *v = 22000; return 0; }
const char* ncclGetErrorString(int r) { return r ? "fake NCCL error" : "no error"; }
int ncclGetUniqueId(ncclUniqueId* id) { memset(id->internal, 'x', sizeof(id->internal)); return 0; }
int ncclCommInitRank(void** comm, int nranks, ncclUniqueId id, int rank) {
  const char* ms = getenv("FAKE_NCCL_INIT_SLEEP_MS");
  if (ms && atoi(ms) > 0) {
    struct timespec t = {atoi(ms) / 1000, (long)(atoi(ms) % 1000) * 1000000L};
    nanosleep(&t, NULL);
  }
  if (id.internal[0] != 'x' || rank < 0 || rank >= nranks) return 4;  // ncclInvalidArgument
  *comm = &g_comm;
  return 0;
}
int ncclCommDestroy(void* comm) { return 0; }
int ncclCommAbort(void* comm) { return 0; }
int ncclCommGetAsyncError(void* comm, int* r) { *r = 0; return 0; }
int ncclAllReduce() { return 0; }
int ncclAllGather() { return 0; }
int ncclReduceScatter() { return 0; }
int ncclBroadcast() { return 0; }
int ncclSend() { return 0; }
int ncclRecv() { return 0; }
