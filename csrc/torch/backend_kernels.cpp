// Kernels for ops torch routes to a backend of its own: it sends a PrivateUse1 tensor to an op that only CUDA
// (or no backend) implements, so the fallback's CPU kernel does not exist.
//  - convolution_overrideable / convolution_backward_overrideable (torch's convolution picks them for every
//    backend it does not know): run aten::convolution / aten::convolution_backward through the fallback, whose
//    CPU kernels choose the CPU implementation (any dimension, transposed, grouped);
//  - _thnn_fused_lstm_cell / _thnn_fused_gru_cell and their backward (what nn.LSTM / nn.GRU call on any
//    non-CPU device; CUDA-only kernels): the same arithmetic as CUDA's, as ops on hal tensors, with CUDA's
//    workspace layout, so torch's derivative formulas (fused and differentiable) apply unchanged.
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>
#include <utility>

#include "fallback.h"

namespace hal::bridge {
namespace {

// Runs op |name| (overload "") with |args| through the fallback; returns the stack of results.
template <typename... Args>
torch::jit::Stack via_fallback(const char* name, Args&&... args) {
  const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  torch::jit::Stack stack;
  stack.reserve(sizeof...(Args));
  (stack.emplace_back(std::forward<Args>(args)), ...);
  fallback_without_composite(op, &stack);  // aten::convolution's composite is what called us.
  return stack;
}

at::Tensor convolution_overrideable(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                                    c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed,
                                    c10::IntArrayRef output_padding, int64_t groups) {
  return via_fallback("aten::convolution", input, weight, bias, stride, padding, dilation, transposed,
                      output_padding, groups)[0]
      .toTensor();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward_overrideable(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, c10::IntArrayRef stride,
    c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed, c10::IntArrayRef output_padding,
    int64_t groups, std::array<bool, 3> output_mask) {
  std::optional<std::vector<int64_t>> bias_sizes;
  if (output_mask[2]) bias_sizes = std::vector<int64_t>{transposed ? weight.size(1) * groups : weight.size(0)};
  torch::jit::Stack out = via_fallback("aten::convolution_backward", grad_output, input, weight, bias_sizes, stride,
                                       padding, dilation, transposed, output_padding, groups, output_mask);
  return {out[0].toTensor(), out[1].toTensor(), out[2].toTensor()};
}

at::Tensor gates_plus_biases(const at::Tensor& input_gates, const at::Tensor& hidden_gates,
                             const std::optional<at::Tensor>& input_bias, const std::optional<at::Tensor>& hidden_bias) {
  at::Tensor gates = input_gates + hidden_gates;
  if (input_bias && input_bias->defined()) gates = gates + *input_bias + *hidden_bias;
  return gates;
}

// Returns (hy, cy, workspace); workspace = [i, f, g, o] gates after their activations, as CUDA keeps it.
std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_lstm_cell(const at::Tensor& input_gates,
                                                               const at::Tensor& hidden_gates, const at::Tensor& cx,
                                                               const std::optional<at::Tensor>& input_bias,
                                                               const std::optional<at::Tensor>& hidden_bias) {
  auto g = gates_plus_biases(input_gates, hidden_gates, input_bias, hidden_bias).chunk(4, 1);
  at::Tensor ig = g[0].sigmoid(), fg = g[1].sigmoid(), cg = g[2].tanh(), og = g[3].sigmoid();
  at::Tensor cy = fg * cx + ig * cg;
  at::Tensor hy = og * cy.tanh();
  return {hy, cy, at::cat({ig, fg, cg, og}, 1)};
}

// Returns (grad_gates, grad_cx, grad_bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_lstm_cell_backward(
    const std::optional<at::Tensor>& grad_hy_opt, const std::optional<at::Tensor>& grad_cy_opt, const at::Tensor& cx,
    const at::Tensor& cy, const at::Tensor& workspace, bool has_bias) {
  auto w = workspace.chunk(4, 1);
  const at::Tensor &ig = w[0], &fg = w[1], &cg = w[2], &og = w[3];
  const bool has_hy = grad_hy_opt && grad_hy_opt->defined();
  at::Tensor grad_hy = has_hy ? *grad_hy_opt : at::zeros_like(cy);
  at::Tensor tanh_cy = cy.tanh();
  at::Tensor gcx = grad_hy * og * (1 - tanh_cy * tanh_cy);
  if (grad_cy_opt && grad_cy_opt->defined()) gcx = gcx + *grad_cy_opt;
  at::Tensor gog = grad_hy * tanh_cy * og * (1 - og);
  at::Tensor gig = gcx * cg * ig * (1 - ig);
  at::Tensor gfg = gcx * cx * fg * (1 - fg);
  at::Tensor gcg = gcx * ig * (1 - cg * cg);
  at::Tensor grad_gates = at::cat({gig, gfg, gcg, gog}, 1);
  return {grad_gates, gcx * fg, has_bias ? grad_gates.sum(0) : at::Tensor()};
}

// Returns (hy, workspace); workspace = [r, z, n, hx, hn] as CUDA keeps it (hn: the hidden n part with its bias).
std::tuple<at::Tensor, at::Tensor> fused_gru_cell(const at::Tensor& input_gates, const at::Tensor& hidden_gates,
                                                  const at::Tensor& hx, const std::optional<at::Tensor>& input_bias,
                                                  const std::optional<at::Tensor>& hidden_bias) {
  const bool has_bias = input_bias && input_bias->defined();
  auto i = (has_bias ? input_gates + *input_bias : input_gates).chunk(3, 1);
  auto h = (has_bias ? hidden_gates + *hidden_bias : hidden_gates).chunk(3, 1);
  at::Tensor rg = (i[0] + h[0]).sigmoid();
  at::Tensor ig = (i[1] + h[1]).sigmoid();
  at::Tensor ng = (i[2] + rg * h[2]).tanh();
  at::Tensor hy = ng + ig * (hx - ng);
  return {hy, at::cat({rg, ig, ng, hx, h[2]}, 1)};
}

// Returns (grad_input_gates, grad_hidden_gates, grad_hx, grad_input_bias, grad_hidden_bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_gru_cell_backward(
    const at::Tensor& grad_hy, const at::Tensor& workspace, bool has_bias) {
  auto w = workspace.chunk(5, 1);
  const at::Tensor &rg = w[0], &ig = w[1], &ng = w[2], &hx = w[3], &hn = w[4];
  at::Tensor gig = grad_hy * (hx - ng) * (1 - ig) * ig;
  at::Tensor ghx = grad_hy * ig;
  at::Tensor gin = grad_hy * (1 - ig) * (1 - ng * ng);
  at::Tensor ghn = gin * rg;
  at::Tensor grg = gin * hn * (1 - rg) * rg;
  at::Tensor grad_input_gates = at::cat({grg, gig, gin}, 1);
  at::Tensor grad_hidden_gates = at::cat({grg, gig, ghn}, 1);
  if (!has_bias) return {grad_input_gates, grad_hidden_gates, ghx, at::Tensor(), at::Tensor()};
  return {grad_input_gates, grad_hidden_gates, ghx, grad_input_gates.sum(0), grad_hidden_gates.sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("convolution_overrideable", TORCH_FN(convolution_overrideable));
  m.impl("convolution_backward_overrideable", TORCH_FN(convolution_backward_overrideable));
  m.impl("_thnn_fused_lstm_cell", TORCH_FN(fused_lstm_cell));
  m.impl("_thnn_fused_lstm_cell_backward_impl", TORCH_FN(fused_lstm_cell_backward));
  m.impl("_thnn_fused_gru_cell", TORCH_FN(fused_gru_cell));
  m.impl("_thnn_fused_gru_cell_backward", TORCH_FN(fused_gru_cell_backward));
}

}  // namespace hal::bridge
