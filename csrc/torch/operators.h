// Native operators: an op on hal tensors runs the device plugin's own kernel when the plugin declares one
// (ABI 1.1, kernel.h), and the per-op statistics of every path an op can take (torch.hal.op_stats).
//
// The boxed fallback (fallback.h) is the one entry of every op without a kernel registered in this module, so
// several plugins' kernels coexist in one process without registering anything with the dispatcher: each
// call is routed by the device it runs on. A call runs natively when
//  - its hal tensors all lie on one device whose plugin declares the op's overload ("aten::add.Tensor"),
//  - every tensor (argument and result) has a dtype the declaration lists, is strided, and carries no
//    conjugate / negative bit; CPU tensors are allowed only as wrapped numbers (a Python number PyTorch made a
//    0-dim tensor), passed to the plugin as scalars,
//  - every argument can be boxed (no generator: random ops keep torch's generators; no layout, device or memory
//    format other than None), every return is a Tensor or Tensor[],
//  - the op has a Meta kernel (it gives each result's dtype and geometry; the results are allocated on the
//    device with them), in-place and out= results need no resize, and
//  - the plugin accepts the call (it may decline one, queuing nothing: the op then falls back).
// The kernel is queued on the device's current stream and the op returns without waiting, as on CUDA.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hal::bridge {

// "aten::add.Tensor" (an overload), "aten::mm" (the default one): how ops are named to plugins and in statistics.
std::string op_name(const c10::FunctionSchema& schema);

enum class Native {
  kRan,        // Queued on the device; the stack holds the results.
  kNot,        // The call cannot run natively (see above); the stack is untouched.
  kDeclined,   // The plugin declined this call; the stack is untouched.
};
// Runs the call on the stack natively on |target| (the device of all its hal tensors) if it can. Throws the
// errors the op itself raises (its Meta kernel's shape checks, the plugin's failure to queue).
Native run_native(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::DeviceIndex target);

// For an op that reaches the router only because some plugin declares it (its PrivateUse1 kernel was registered
// for that), on a device whose plugin does not: runs the composite kernel it had before (the functional wrapper
// of a structured op calls its .out overload, which the fallback runs in place without a copy) and returns true;
// false when it had none (the fallback proper then runs it).
bool run_as_before_registration(const c10::OperatorHandle& op, torch::jit::Stack* stack, const std::string& name);

// How an op ran.
enum class OpPath { kNative = 0, kDecomposed = 1, kFallback = 2 };

// Counts one call of |op| ("aten::add.Tensor") by |path| that took |ns| nanoseconds on the host (for native
// calls: until the kernel was queued; for fallbacks: without |waited_ns|, the time spent first waiting for the
// device's earlier work). |declined|: the plugin declined the call before it fell back.
void record_op(const std::string& op, OpPath path, int64_t ns, bool declined = false, int64_t waited_ns = 0);

struct OpPathStats {
  int64_t calls = 0;
  int64_t ns = 0;
  int64_t waited_ns = 0;
};
struct OpStats {
  OpPathStats native, decomposed, fallback;
  int64_t declined = 0;  // Calls the plugin declined (they then fell back).
};
std::map<std::string, OpStats> op_stats();
void reset_op_stats();

}  // namespace hal::bridge
