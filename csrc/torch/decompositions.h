// Decompositions: an op the device's plugin has no kernel for, but whose PyTorch decomposition calls only ops it
// has (or can decompose in turn), runs as that decomposition on the hal tensors, so its pieces run natively
// instead of the whole op falling back to the CPU. The decomposition table, and the decision whether an op
// decomposes into the device's kernels, are Python's (hal/torch/decompositions.py: torch._decomp, traced once
// per op and device on meta tensors); this file asks it, caches its answer per (device, op), and runs the
// decomposition through it with the call's arguments.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace hal::bridge {

// Runs the call on the stack as its decomposition into |target|'s kernels and returns true, or returns false
// with the stack untouched when it has none for this device. Throws what the decomposition raises.
bool run_decomposed(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::DeviceIndex target);

// Forgets the cached answers (after the Python side's table changed: tests).
void reset_decomposition_plans();

}  // namespace hal::bridge
