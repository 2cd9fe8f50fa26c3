// hal::Communicator (communicator.h).
#include "runtime/communicator.h"

#include <cstring>

#include "runtime/error.h"

namespace hal {

namespace {

constexpr const char* kReduceOps[] = {"sum", "prod", "min", "max", "avg"};  // hal_reduce_op_e order.

// The optional entries behind Communicator::supports, by operation name.
struct OpEntry {
  const char* op;
  const char* entry;  // The plugin_entries() name.
};
constexpr OpEntry kOps[] = {{"allreduce", "allreduce"}, {"allgather", "allgather"},
                            {"reduce_scatter", "reduce_scatter"}, {"broadcast", "broadcast"},
                            {"send", "send"}, {"recv", "recv"}};

}  // namespace

hal_dtype_t parse_dtype(const std::string& name) {
  std::string known;
  for (hal_dtype_t d = 0; d < HAL_DTYPE_COUNT; ++d) {
    if (name == dtype_name(d)) return d;
    known += std::string(known.empty() ? "" : ", ") + dtype_name(d);
  }
  throw_error(HAL_STATUS_INVALID_ARGUMENT, "dtype '" + name + "' is not one of " + known);
}

hal_reduce_op_t parse_reduce_op(const std::string& name) {
  std::string known;
  for (hal_reduce_op_t op = 0; op < static_cast<hal_reduce_op_t>(std::size(kReduceOps)); ++op) {
    if (name == kReduceOps[op]) return op;
    known += std::string(known.empty() ? "" : ", ") + kReduceOps[op];
  }
  throw_error(HAL_STATUS_INVALID_ARGUMENT, "op '" + name + "' is not one of " + known);
}

std::string Communicator::unique_id(Device& device) {
  const Plugin& plugin = device.plugin();
  auto get_id = plugin.require(&hal_plugin_api_t::comm_get_unique_id, "comm_get_unique_id");
  hal_comm_unique_id_t id;
  std::memset(&id, 0, sizeof(id));
  plugin.check(get_id(&id), "comm_get_unique_id", device.name());
  return std::string(reinterpret_cast<const char*>(id.bytes), sizeof(id.bytes));
}

Communicator::Communicator(Device& device, int32_t nranks, const std::string& unique_id, int32_t rank,
                           uint32_t timeout_ms)
    : device_(device), nranks_(nranks), rank_(rank) {
  const Plugin& plugin = device.plugin();
  auto init_rank = plugin.require(&hal_plugin_api_t::comm_init_rank, "comm_init_rank");
  if (unique_id.size() != HAL_COMM_UNIQUE_ID_BYTES) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, "unique_id has " + std::to_string(unique_id.size()) +
                                                 " bytes, a comm_unique_id has " +
                                                 std::to_string(HAL_COMM_UNIQUE_ID_BYTES));
  }
  hal_comm_unique_id_t id;
  std::memcpy(id.bytes, unique_id.data(), sizeof(id.bytes));
  hal_comm_config_t config{};
  config.struct_size = sizeof(config);
  config.timeout_ms = timeout_ms;
  plugin.check(init_rank(device.local_index(), nranks, &id, rank, &config, &comm_), "comm_init_rank", device.name());
}

Communicator::~Communicator() {
  try {
    destroy();
  } catch (const Error&) {
    // Nothing to tell from a destructor: the plugin refused (closed, or a child of fork()).
  }
}

bool Communicator::supports(const std::string& op) const {
  for (const OpEntry& e : kOps) {
    if (op == e.op) return device_.plugin().has(e.entry);
  }
  throw_error(HAL_STATUS_INVALID_ARGUMENT,
              "op '" + op + "' is not one of allreduce, allgather, reduce_scatter, broadcast, send, recv");
}

template <typename Fn>
void Communicator::enqueue(const char* entry, const Stream& stream, Fn fn) {
  if (&stream.device() != &device_) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, std::string(entry) + ": stream is of " + stream.device().name() +
                                                 ", the communicator's device is " + device_.name());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (comm_ == nullptr) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, std::string(entry) + ": the communicator of " + device_.name() +
                                                 " is destroyed");
  }
  device_.plugin().check(fn(comm_, stream.native()), entry, device_.name());
}

void Communicator::allreduce(const void* send, void* recv, uint64_t count, const std::string& dtype,
                             const std::string& op, const Stream& stream) {
  auto fn = device_.plugin().require(&hal_plugin_api_t::allreduce, "allreduce");
  const hal_dtype_t d = parse_dtype(dtype);
  const hal_reduce_op_t o = parse_reduce_op(op);
  enqueue("allreduce", stream, [&](hal_comm_t c, hal_stream_t s) { return fn(c, send, recv, count, d, o, s); });
}

void Communicator::allgather(const void* send, void* recv, uint64_t send_count, const std::string& dtype,
                             const Stream& stream) {
  auto fn = device_.plugin().require(&hal_plugin_api_t::allgather, "allgather");
  const hal_dtype_t d = parse_dtype(dtype);
  enqueue("allgather", stream, [&](hal_comm_t c, hal_stream_t s) { return fn(c, send, recv, send_count, d, s); });
}

void Communicator::reduce_scatter(const void* send, void* recv, uint64_t recv_count, const std::string& dtype,
                                  const std::string& op, const Stream& stream) {
  auto fn = device_.plugin().require(&hal_plugin_api_t::reduce_scatter, "reduce_scatter");
  const hal_dtype_t d = parse_dtype(dtype);
  const hal_reduce_op_t o = parse_reduce_op(op);
  enqueue("reduce_scatter", stream,
          [&](hal_comm_t c, hal_stream_t s) { return fn(c, send, recv, recv_count, d, o, s); });
}

void Communicator::broadcast(const void* send, void* recv, uint64_t count, const std::string& dtype, int32_t root,
                             const Stream& stream) {
  auto fn = device_.plugin().require(&hal_plugin_api_t::broadcast, "broadcast");
  const hal_dtype_t d = parse_dtype(dtype);
  enqueue("broadcast", stream, [&](hal_comm_t c, hal_stream_t s) { return fn(c, send, recv, count, d, root, s); });
}

void Communicator::send(const void* send, uint64_t count, const std::string& dtype, int32_t peer,
                        const Stream& stream) {
  auto fn = device_.plugin().require(&hal_plugin_api_t::send, "send");
  const hal_dtype_t d = parse_dtype(dtype);
  enqueue("send", stream, [&](hal_comm_t c, hal_stream_t s) { return fn(c, send, count, d, peer, s); });
}

void Communicator::recv(void* recv, uint64_t count, const std::string& dtype, int32_t peer, const Stream& stream) {
  auto fn = device_.plugin().require(&hal_plugin_api_t::recv, "recv");
  const hal_dtype_t d = parse_dtype(dtype);
  enqueue("recv", stream, [&](hal_comm_t c, hal_stream_t s) { return fn(c, recv, count, d, peer, s); });
}

void Communicator::abort() {
  std::lock_guard<std::mutex> lock(mutex_);
  hal_comm_t handle = comm_ != nullptr ? comm_ : destroying_;
  const hal_plugin_api_t* api = device_.plugin().api_if_alive();
  if (handle == nullptr || api == nullptr || api->comm_abort == nullptr) return;
  // A handle destroy() has just released is refused by the plugin (not found): nothing left to abort.
  const hal_status_t status = api->comm_abort(handle);
  if (comm_ != nullptr) device_.plugin().check(status, "comm_abort", device_.name());
}

void Communicator::destroy() {
  hal_comm_t handle;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (comm_ == nullptr) return;
    handle = destroying_ = comm_;
    comm_ = nullptr;
  }
  const hal_plugin_api_t* api = device_.plugin().api_if_alive();
  hal_status_t status = api != nullptr ? api->comm_destroy(handle) : HAL_STATUS_OK;  // Blocks.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    destroying_ = nullptr;
  }
  if (api != nullptr) device_.plugin().check(status, "comm_destroy", device_.name());
}

}  // namespace hal
