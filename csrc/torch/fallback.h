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

std::map<std::string, int64_t> fallback_stats();
void reset_fallback_stats();
// Names are "aten::add.Tensor" (one overload) or "aten::add" / "add" (every overload).
void set_fallback_blocklist(const std::vector<std::string>& names);
std::vector<std::string> fallback_blocklist();

}  // namespace hal::bridge
