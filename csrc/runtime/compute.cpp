#include "runtime/compute.h"

#include <unordered_set>

#include "runtime/device.h"
#include "runtime/stream.h"

namespace hal {

OperatorTable::OperatorTable(const Device& device) {
  const Plugin& plugin = device.plugin();
  if (plugin.api().op_list == nullptr) return;
  const hal_op_t* ops = nullptr;
  uint64_t count = 0;
  plugin.check(plugin.api().op_list(device.local_index(), &ops, &count), "op_list", device.name());
  if (count > 0 && ops == nullptr) {
    throw_error(HAL_STATUS_INTERNAL, device.name() + " (" + plugin.describe() + "): op_list returned " +
                                         std::to_string(count) + " operators but no table");
  }
  for (uint64_t i = 0; i < count; ++i) {
    if (ops[i].name == nullptr || ops[i].name[0] == '\0') {
      throw_error(HAL_STATUS_INTERNAL, device.name() + " (" + plugin.describe() + "): op_list entry " +
                                           std::to_string(i) + " has no name");
    }
    const std::string name = ops[i].name;
    if (!index_.emplace(name, static_cast<int64_t>(i)).second) {
      throw_error(HAL_STATUS_INTERNAL, device.name() + " (" + plugin.describe() + "): op_list names '" + name +
                                           "' twice");
    }
    ops_.push_back({name, ops[i].dtypes});
  }
}

int64_t OperatorTable::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

bool launch_operator(const Stream& stream, int64_t op, const hal_value_t* args, size_t num_args,
                     const hal_tensor_t* results, size_t num_results, std::string* declined) {
  Device& device = stream.device();
  const Plugin& plugin = device.plugin();
  auto launch = plugin.require(&hal_plugin_api_t::op_launch, "op_launch");
  const hal_status_t status = launch(stream.native(), static_cast<uint64_t>(op), args, num_args, results, num_results);
  if (status == HAL_STATUS_UNIMPLEMENTED) {
    if (declined != nullptr) *declined = plugin.last_error();
    return false;
  }
  plugin.check(status, "op_launch", device.name());
  return true;
}

// --- Programs and kernels ----------------------------------------------------------------------------------

struct Program::State {
  Device* device;
  hal_program_t handle;
  ~State() {
    if (const hal_plugin_api_t* api = device->plugin().api_if_alive()) api->program_destroy(handle);
  }
};

struct Kernel::State {
  std::shared_ptr<Program::State> program;
  std::string name;
  hal_kernel_t handle;
  ~State() {
    if (const hal_plugin_api_t* api = program->device->plugin().api_if_alive()) api->kernel_destroy(handle);
  }
};

Program::Program(Device& device, const std::string& format, const void* data, size_t size,
                 const std::string& options) {
  const Plugin& plugin = device.plugin();
  auto create = plugin.require(&hal_plugin_api_t::program_create, "program_create");
  hal_program_t handle = nullptr;
  plugin.check(create(device.local_index(), format.c_str(), data, size, options.c_str(), &handle),
               "program_create", device.name());
  state_ = std::shared_ptr<State>(new State{&device, handle});  // Not a temporary: its destructor destroys.
}

Device& Program::device() const { return *state_->device; }
hal_program_t Program::native() const { return state_->handle; }

Kernel Program::kernel(const std::string& name) const {
  const Plugin& plugin = state_->device->plugin();
  hal_kernel_t handle = nullptr;
  plugin.check(plugin.api().kernel_create(state_->handle, name.c_str(), &handle),
               ("kernel_create('" + name + "')").c_str(), state_->device->name());
  Kernel kernel;
  kernel.state_ = std::shared_ptr<Kernel::State>(new Kernel::State{state_, name, handle});
  return kernel;
}

const std::string& Kernel::name() const { return state_->name; }
Device& Kernel::device() const { return *state_->program->device; }
hal_kernel_t Kernel::native() const { return state_->handle; }

void Kernel::launch(const Stream& stream, const uint64_t global[3], const uint64_t* local,
                    const std::vector<hal_kernel_arg_t>& args) const {
  Device& dev = device();
  if (&stream.device() != &dev) {
    throw_error(HAL_STATUS_INVALID_ARGUMENT, "kernel '" + name() + "' was built for " + dev.name() +
                                                 " and cannot be launched on a stream of " + stream.device().name());
  }
  const Plugin& plugin = dev.plugin();
  plugin.check(plugin.api().kernel_launch(stream.native(), state_->handle, global, local, args.data(), args.size()),
               ("kernel_launch('" + name() + "')").c_str(), dev.name());
}

}  // namespace hal
