// HAL plugin ABI: collectives among devices of one plugin (an "island" of one device type).
//
// OPTIONAL as a whole: a plugin without collectives leaves every entry below NULL, and HAL bridges its
// devices through the host. A plugin that has them must provide all of comm_get_unique_id,
// comm_init_rank, comm_destroy, comm_abort and allreduce; the other collectives may be NULL.
//
// Model (as NCCL, RCCL, HCCL): one rank creates a unique id, the ranks share it out of band (HAL does this
// through torch.distributed's store), and each rank creates its communicator from it for one local device.
// Collectives are queued on a stream of that device and complete asynchronously like copies. Every rank
// must issue the same collectives in the same order.
//
// Failures: a collective that does not complete within the communicator's timeout makes its stream fail
// with HAL_STATUS_TIMEOUT (a peer that died shows up this way); comm_abort cancels queued and running
// collectives, which then fail with HAL_STATUS_ABORTED. After either, the communicator only accepts
// comm_destroy. A timeout may not be seen by every rank at the same moment.
//
// Common to every collective below: a count of 0 is a valid no-op (it still takes its place in the order);
// HAL_REDUCE_AVG is the sum divided by nranks, truncated toward zero for integer dtypes; in-place use
// (recvbuf == sendbuf, or for allgather sendbuf == recvbuf + rank * send_count, for reduce_scatter
// recvbuf == sendbuf + rank * recv_count) is allowed. A plugin that cannot reduce some dtype (f8e4m3, say)
// fails the call with HAL_STATUS_UNIMPLEMENTED naming the dtype and the op.
#ifndef HAL_COLLECTIVE_H_
#define HAL_COLLECTIVE_H_

#include "hal/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HAL_COMM_UNIQUE_ID_BYTES 128

// Opaque bytes that name one communicator clique; copied between processes as plain bytes.
typedef struct hal_comm_unique_id_t {
  uint8_t bytes[HAL_COMM_UNIQUE_ID_BYTES];
} hal_comm_unique_id_t;

typedef struct hal_comm_s* hal_comm_t;  // Opaque; owned by whoever created it.

typedef enum hal_reduce_op_e {
  HAL_REDUCE_SUM = 0,
  HAL_REDUCE_PROD = 1,
  HAL_REDUCE_MIN = 2,
  HAL_REDUCE_MAX = 3,
  HAL_REDUCE_AVG = 4,
} hal_reduce_op_e;
typedef int32_t hal_reduce_op_t;

// Options for comm_init_rank. Grows only at the end; the caller sets struct_size.
typedef struct hal_comm_config_t {
  size_t struct_size;
  uint32_t timeout_ms;  // Per-collective timeout; 0 means the plugin's default (at least 60 s).
} hal_comm_config_t;

// Writes a fresh unique id. Thread-safe; does not block on device work.
typedef hal_status_t (*hal_comm_get_unique_id_fn)(hal_comm_unique_id_t* out_id);

// Creates rank |rank| of |nranks| of the clique named by |id|, on local device |device|. Blocks until all
// ranks have joined or |config|'s timeout passes (HAL_STATUS_TIMEOUT). |*out_comm| must be released with
// comm_destroy. |config| may be NULL for defaults.
typedef hal_status_t (*hal_comm_init_rank_fn)(int32_t device, int32_t nranks, const hal_comm_unique_id_t* id,
                                              int32_t rank, const hal_comm_config_t* config, hal_comm_t* out_comm);

// Releases |comm| after its queued collectives complete. Thread-safe; blocks.
typedef hal_status_t (*hal_comm_destroy_fn)(hal_comm_t comm);

// Cancels every queued and running collective of |comm| (they fail with HAL_STATUS_ABORTED). Safe to call
// from any thread, including while another thread is blocked in a collective or a synchronize.
typedef hal_status_t (*hal_comm_abort_fn)(hal_comm_t comm);

// Element-wise reduction of |count| elements of |dtype| across ranks; every rank receives the result in
// |recvbuf| (which may equal |sendbuf|).
typedef hal_status_t (*hal_allreduce_fn)(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count,
                                         hal_dtype_t dtype, hal_reduce_op_t op, hal_stream_t stream);
// Every rank contributes |send_count| elements; |recvbuf| holds nranks * send_count, in rank order.
typedef hal_status_t (*hal_allgather_fn)(hal_comm_t comm, const void* sendbuf, void* recvbuf,
                                         uint64_t send_count, hal_dtype_t dtype, hal_stream_t stream);
// Reduces nranks * |recv_count| elements; rank r receives block r of the result.
typedef hal_status_t (*hal_reduce_scatter_fn)(hal_comm_t comm, const void* sendbuf, void* recvbuf,
                                              uint64_t recv_count, hal_dtype_t dtype, hal_reduce_op_t op,
                                              hal_stream_t stream);
// Copies |count| elements from |sendbuf| of rank |root| into |recvbuf| of every rank.
typedef hal_status_t (*hal_broadcast_fn)(hal_comm_t comm, const void* sendbuf, void* recvbuf, uint64_t count,
                                         hal_dtype_t dtype, int32_t root, hal_stream_t stream);
// Point-to-point: a send to |peer| matches the recv from this rank that |peer| issues in the same order.
typedef hal_status_t (*hal_send_fn)(hal_comm_t comm, const void* sendbuf, uint64_t count, hal_dtype_t dtype,
                                    int32_t peer, hal_stream_t stream);
typedef hal_status_t (*hal_recv_fn)(hal_comm_t comm, void* recvbuf, uint64_t count, hal_dtype_t dtype,
                                    int32_t peer, hal_stream_t stream);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_COLLECTIVE_H_
