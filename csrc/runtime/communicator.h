// hal::Communicator: one rank of a clique of one plugin's devices (collective.h), as RAII over hal_comm_t.
//
// The plugin's native collective library does the work (NCCL for CUDA, shared memory for cpu and emu):
// every operation is queued on a Stream of the communicator's device and returns at once, like a copy;
// bad arguments throw at the call (HAL_STATUS_INVALID_ARGUMENT naming the argument); a collective that
// fails later (timeout, dead peer, abort) fails its stream, so the next synchronize throws.
//
// Lifetime and threading: the constructor blocks until every rank joined (or the timeout). destroy() lets
// queued collectives finish, is idempotent, and runs from the destructor. abort() may be called from any
// thread, also while another thread waits on a stream or in destroy(). The operations may be called from
// several threads; all ranks must issue the same collectives in the same order.
#ifndef HAL_RUNTIME_COMMUNICATOR_H_
#define HAL_RUNTIME_COMMUNICATOR_H_

#include <cstdint>
#include <mutex>
#include <string>

#include "hal/hal.h"
#include "runtime/device.h"
#include "runtime/stream.h"

namespace hal {

// "f32", "bf16", ... (dtype_name's strings) -> hal_dtype_t; throws HAL_STATUS_INVALID_ARGUMENT naming them.
hal_dtype_t parse_dtype(const std::string& name);
// "sum", "prod", "min", "max", "avg" -> hal_reduce_op_t; throws HAL_STATUS_INVALID_ARGUMENT naming them.
hal_reduce_op_t parse_reduce_op(const std::string& name);

class Communicator {
 public:
  // HAL_COMM_UNIQUE_ID_BYTES bytes naming a new clique of |device|'s plugin; HAL_STATUS_UNIMPLEMENTED when
  // the plugin has no collectives.
  static std::string unique_id(Device& device);

  // Joins rank |rank| of |nranks| of the clique |unique_id| with |device|; blocks until all joined.
  // |timeout_ms| is the per-collective timeout (0: the plugin's default).
  Communicator(Device& device, int32_t nranks, const std::string& unique_id, int32_t rank, uint32_t timeout_ms);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  Device& device() const { return device_; }
  int32_t rank() const { return rank_; }
  int32_t nranks() const { return nranks_; }
  // Whether the plugin has the operation "allreduce", "allgather", "reduce_scatter", "broadcast", "send" or
  // "recv"; throws HAL_STATUS_INVALID_ARGUMENT for any other name.
  bool supports(const std::string& op) const;

  void allreduce(const void* send, void* recv, uint64_t count, const std::string& dtype, const std::string& op,
                 const Stream& stream);
  void allgather(const void* send, void* recv, uint64_t send_count, const std::string& dtype, const Stream& stream);
  void reduce_scatter(const void* send, void* recv, uint64_t recv_count, const std::string& dtype,
                      const std::string& op, const Stream& stream);
  void broadcast(const void* send, void* recv, uint64_t count, const std::string& dtype, int32_t root,
                 const Stream& stream);
  void send(const void* send, uint64_t count, const std::string& dtype, int32_t peer, const Stream& stream);
  void recv(void* recv, uint64_t count, const std::string& dtype, int32_t peer, const Stream& stream);

  void abort();    // Fails queued and running collectives (HAL_STATUS_ABORTED), here and on the peers.
  void destroy();  // Idempotent; blocks until the queued collectives completed.

 private:
  // Calls |fn|(handle, native stream) for an operation queued on |stream|, under mutex_ (never blocks).
  template <typename Fn>
  void enqueue(const char* entry, const Stream& stream, Fn fn);

  Device& device_;
  int32_t nranks_, rank_;
  std::mutex mutex_;               // Guards the two below; never held across a blocking plugin call.
  hal_comm_t comm_ = nullptr;      // nullptr once destroy() began.
  hal_comm_t destroying_ = nullptr;  // The handle destroy() is releasing, still abortable.
};

}  // namespace hal

#endif  // HAL_RUNTIME_COMMUNICATOR_H_
