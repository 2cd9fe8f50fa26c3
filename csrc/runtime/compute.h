// Compute on a device (ABI 1.1, kernel.h): the operators a device declares, and programs / kernels loaded
// at run time.
//
// Operators. Device::operators() reads the device's op_list once (on first use) into an OperatorTable: names
// to indices and dtype masks. launch_operator queues one call; a plugin that declines the call
// (HAL_STATUS_UNIMPLEMENTED, nothing queued) makes it return false, so the caller runs the operator another
// way; any other failure throws through Plugin::check.
//
// Programs. A Program owns its hal_program_t and a Kernel its hal_kernel_t (shared states: copies share them,
// the last copy destroys). A Kernel holds its Program, so a program outlives its kernels as kernel.h asks.
// Destruction after Runtime::shutdown does nothing (the plugin is gone).
#ifndef HAL_RUNTIME_COMPUTE_H_
#define HAL_RUNTIME_COMPUTE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "hal/hal.h"

namespace hal {

class Device;
class Stream;

struct OperatorInfo {
  std::string name;  // "aten::add.Tensor"
  uint64_t dtypes;   // HAL_DTYPE_BIT mask
};

class OperatorTable {
 public:
  OperatorTable() = default;
  // Reads |device|'s op_list (empty without the entry). Throws the plugin's error, or
  // HAL_STATUS_INTERNAL for a malformed list (a NULL or repeated name).
  explicit OperatorTable(const Device& device);

  const std::vector<OperatorInfo>& all() const { return ops_; }
  // The index of |name| ("aten::mm", "aten::add.Tensor"), or -1.
  int64_t find(const std::string& name) const;

 private:
  std::vector<OperatorInfo> ops_;
  std::unordered_map<std::string, int64_t> index_;
};

// Queues operator |op| of |stream|'s device (kernel.h, op_launch). Returns false when the plugin declined the
// call (HAL_STATUS_UNIMPLEMENTED: nothing was queued; the plugin's message is in |*declined| when given).
// Throws HAL_STATUS_UNIMPLEMENTED when the plugin has no operators, and the plugin's other errors.
bool launch_operator(const Stream& stream, int64_t op, const hal_value_t* args, size_t num_args,
                     const hal_tensor_t* results, size_t num_results, std::string* declined = nullptr);

class Kernel;

class Program {
 public:
  // Builds |size| bytes at |data| in |format| for |device| (program_create). Throws HAL_STATUS_UNIMPLEMENTED
  // when the plugin has no programs, and the plugin's error (a build failure carries the build log).
  Program(Device& device, const std::string& format, const void* data, size_t size, const std::string& options);

  Device& device() const;
  hal_program_t native() const;
  // The kernel |name| of this program (kernel_create).
  Kernel kernel(const std::string& name) const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  friend class Kernel;
};

class Kernel {
 public:
  const std::string& name() const;
  Device& device() const;
  hal_kernel_t native() const;
  // Queues the kernel on |stream| (kernel_launch): |local| empty lets the plugin choose.
  void launch(const Stream& stream, const uint64_t global[3], const uint64_t* local,
              const std::vector<hal_kernel_arg_t>& args) const;

 private:
  friend class Program;
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace hal

#endif  // HAL_RUNTIME_COMPUTE_H_
