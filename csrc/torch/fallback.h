// The boxed fallback of the `hal` backend: every op without a native kernel runs its CPU kernel (or, for view
// ops, its Meta kernel), and its statistics and blocklist (torch.hal.fallback_stats / set_fallback_blocklist).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hal::bridge {

// Registered for every op without a native kernel (see fallback.cpp). Native kernels for one plugin's devices
// call it for the other plugins' tensors.
void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack);
// The same without the op's own composite (run_as_before_registration): the device's kernel, a decomposition,
// or the CPU kernel. For kernels the composite itself reaches (convolution_overrideable, which
// aten::convolution's composite calls on every backend torch does not know), where the composite would loop.
void fallback_without_composite(const c10::OperatorHandle& op, torch::jit::Stack* stack);

std::map<std::string, int64_t> fallback_stats();
void reset_fallback_stats();
// Names are "aten::add.Tensor" (one overload) or "aten::add" / "add" (every overload).
void set_fallback_blocklist(const std::vector<std::string>& names);
std::vector<std::string> fallback_blocklist();

}  // namespace hal::bridge
