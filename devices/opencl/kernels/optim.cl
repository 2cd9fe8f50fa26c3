// Optimizer steps. adamw_f32: one parameter tensor's fused AdamW (Adam with decoupled weight decay) update, as
// torch's fused kernels do it (aten::_fused_adamw_): EW_CHUNK elements per work item, all tensors contiguous.
// |step| is the tensor's step count (already incremented by the optimizer), |grad_scale| and |found_inf| are
// optional scalars (NULL buffers when absent): the gradient is divided by the scale, and nothing is updated
// where found_inf is non-zero (torch's AMP contract).
__kernel void adamw_f32(__global float* p, ulong p_off, __global const float* g, ulong g_off, __global float* m,
                        ulong m_off, __global float* v, ulong v_off, __global float* vmax, ulong vmax_off,
                        __global const float* step, ulong step_off, __global const float* scale, ulong scale_off,
                        __global const float* inf, ulong inf_off, long n, float lr, float beta1, float beta2,
                        float weight_decay, float eps, int amsgrad, int maximize) {
  if (inf && *AT(const float, inf, inf_off) != 0.0f) return;
  const float t = *AT(const float, step, step_off);
  const float step_size = lr / (1.0f - pow(beta1, t));
  const float bc2_sqrt = sqrt(1.0f - pow(beta2, t));
  const float inv_scale = scale ? 1.0f / *AT(const float, scale, scale_off) : 1.0f;
  __global float* P = AT(float, p, p_off);
  __global const float* G = AT(const float, g, g_off);
  __global float* M = AT(float, m, m_off);
  __global float* V = AT(float, v, v_off);
  __global float* VM = amsgrad ? AT(float, vmax, vmax_off) : V;
  const long begin = get_global_id(0) * EW_CHUNK, end = min(begin + EW_CHUNK, n);
  for (long i = begin; i < end; i++) {
    float grad = G[i] * inv_scale;
    if (maximize) grad = -grad;
    const float param = P[i] * (1.0f - lr * weight_decay);
    const float exp_avg = M[i] + (1.0f - beta1) * (grad - M[i]);
    const float exp_avg_sq = beta2 * V[i] + (1.0f - beta2) * grad * grad;
    float second = exp_avg_sq;
    if (amsgrad) {
      second = fmax(VM[i], exp_avg_sq);
      VM[i] = second;
    }
    M[i] = exp_avg;
    V[i] = exp_avg_sq;
    P[i] = param - step_size * exp_avg / (sqrt(second) / bc2_sqrt + eps);
  }
}
