// The opencl plugin's operator kernels (OpenCL C 1.2), built once per device on first use (opencl_ops.c).
//
// Conventions. Every tensor is three parameters: its buffer, the byte offset of the tensor's storage in it (the
// BUFFER argument convention of the plugin), and a geom_t by value: sizes and strides (in elements) over the
// dimensions of the iteration space, 0 where the tensor is broadcast, and its element offset. The host lays the
// geometry out against the result's shape, so kernels never broadcast themselves.
#define MAXD 8

typedef struct {
  long size[MAXD];
  long stride[MAXD];
  long offset;
  int ndim;
  int pad;
} geom_t;

#define AT(type, buf, byte_off) ((__global type*)((__global char*)(buf) + (byte_off)))

// The element offsets of linear index i of the iteration space |it| in up to four tensors.
#define UNRAVEL(i, it, o0, g0, o1, g1, o2, g2, o3, g3)                                    \
  do {                                                                                   \
    long r_ = (i);                                                                       \
    o0 = g0.offset; o1 = g1.offset; o2 = g2.offset; o3 = g3.offset;                      \
    for (int d_ = it.ndim - 1; d_ >= 0; --d_) {                                          \
      long x_ = r_ % it.size[d_];                                                        \
      r_ /= it.size[d_];                                                                 \
      o0 += x_ * g0.stride[d_]; o1 += x_ * g1.stride[d_];                                \
      o2 += x_ * g2.stride[d_]; o3 += x_ * g3.stride[d_];                                \
    }                                                                                    \
  } while (0)

// --- Elementwise: out = f(a, b, c) ------------------------------------------------------------------------
// op codes (opencl_ops.c: enum ew_op)
#define EW_ADD 0        // a + s0 * b
#define EW_SUB 1        // a - s0 * b
#define EW_MUL 2
#define EW_DIV 3
#define EW_NEG 4
#define EW_EXP 5
#define EW_LOG 6
#define EW_SQRT 7
#define EW_RSQRT 8
#define EW_TANH 9
#define EW_SIGMOID 10
#define EW_RELU 11
#define EW_GELU 12      // s0: 0 exact (erf), 1 tanh
#define EW_SILU 13
#define EW_ABS 14
#define EW_FILL 15      // s1
#define EW_COPY 16      // a
#define EW_GELU_BW 17   // a = grad, b = x
#define EW_SILU_BW 18   // a = grad, b = x
#define EW_THRESHOLD_BW 19  // a = grad, b = x, s0 threshold: grad where x > threshold
#define EW_SIGMOID_BW 20    // a = grad, b = y
#define EW_TANH_BW 21       // a = grad, b = y
#define EW_ADDCMUL 22   // a + s0 * b * c
#define EW_ADDCDIV 23   // a + s0 * b / c
#define EW_LERP 24      // a + s0 * (b - a)
#define EW_MAXIMUM 25
#define EW_MINIMUM 26
#define EW_POW_SCALAR 27  // a ^ s0
#define EW_RECIPROCAL 28

#define SQRT_2_OVER_PI 0.7978845608028654f
#define INV_SQRT_2 0.7071067811865476f
#define INV_SQRT_2PI 0.3989422804014327f

float ew_apply(int op, float a, float b, float c, float s0, float s1) {
  switch (op) {
    case EW_ADD: return a + s0 * b;
    case EW_SUB: return a - s0 * b;
    case EW_MUL: return a * b;
    case EW_DIV: return a / b;
    case EW_NEG: return -a;
    case EW_EXP: return exp(a);
    case EW_LOG: return log(a);
    case EW_SQRT: return sqrt(a);
    case EW_RSQRT: return rsqrt(a);
    case EW_TANH: return tanh(a);
    case EW_SIGMOID: return 1.0f / (1.0f + exp(-a));
    case EW_RELU: return a > 0.0f ? a : (isnan(a) ? a : 0.0f);
    case EW_GELU:
      if (s0 != 0.0f) return 0.5f * a * (1.0f + tanh(SQRT_2_OVER_PI * (a + 0.044715f * a * a * a)));
      return 0.5f * a * (1.0f + erf(a * INV_SQRT_2));
    case EW_SILU: return a / (1.0f + exp(-a));
    case EW_ABS: return fabs(a);
    case EW_FILL: return s1;
    case EW_COPY: return a;
    case EW_GELU_BW: {
      const float x = b;
      if (s0 != 0.0f) {
        const float inner = SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
        const float t = tanh(inner);
        const float d_inner = SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x * x);
        return a * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * d_inner);
      }
      const float cdf = 0.5f * (1.0f + erf(x * INV_SQRT_2));
      const float pdf = INV_SQRT_2PI * exp(-0.5f * x * x);
      return a * (cdf + x * pdf);
    }
    case EW_SILU_BW: {
      const float sig = 1.0f / (1.0f + exp(-b));
      return a * sig * (1.0f + b * (1.0f - sig));
    }
    case EW_THRESHOLD_BW: return b <= s0 ? 0.0f : a;
    case EW_SIGMOID_BW: return a * (1.0f - b) * b;
    case EW_TANH_BW: return a * (1.0f - b * b);
    case EW_ADDCMUL: return a + s0 * b * c;
    case EW_ADDCDIV: return a + s0 * b / c;
    case EW_LERP: return fabs(s0) < 0.5f ? a + s0 * (b - a) : b - (b - a) * (1.0f - s0);
    case EW_MAXIMUM: return (isnan(a) || isnan(b)) ? NAN : fmax(a, b);
    case EW_MINIMUM: return (isnan(a) || isnan(b)) ? NAN : fmin(a, b);
    case EW_POW_SCALAR: return s0 == 2.0f ? a * a : (s0 == 0.5f ? sqrt(a) : pow(a, s0));
    case EW_RECIPROCAL: return 1.0f / a;
  }
  return NAN;
}

// One work item per element of the iteration space |it| (the result's shape). An input with buffer NULL is
// not read (a scalar or an unused operand): its value is the scalar given.
__kernel void ew_f32(__global float* out, ulong out_off, geom_t og,
                     __global const float* a, ulong a_off, geom_t ag, float a_scalar,
                     __global const float* b, ulong b_off, geom_t bg, float b_scalar,
                     __global const float* c, ulong c_off, geom_t cg, float c_scalar,
                     int op, float s0, float s1, long n, int use_a, int use_b, int use_c) {
  const long i = get_global_id(0);
  if (i >= n) return;
  long oo, ao, bo, co;
  UNRAVEL(i, og, oo, og, ao, ag, bo, bg, co, cg);
  const float x = use_a ? AT(const float, a, a_off)[ao] : a_scalar;
  const float y = use_b ? AT(const float, b, b_off)[bo] : b_scalar;
  const float z = use_c ? AT(const float, c, c_off)[co] : c_scalar;
  AT(float, out, out_off)[oo] = ew_apply(op, x, y, z, s0, s1);
}

// The same for contiguous tensors of the result's shape (no broadcast): linear indices from each tensor's first
// element (the host folds its element offset into the byte offset).
__kernel void ew_contig_f32(__global float* out, ulong out_off, __global const float* a, ulong a_off, float a_scalar,
                            __global const float* b, ulong b_off, float b_scalar,
                            __global const float* c, ulong c_off, float c_scalar,
                            int op, float s0, float s1, long n, int use_a, int use_b, int use_c) {
  const long i = get_global_id(0);
  if (i >= n) return;
  const float x = use_a ? AT(const float, a, a_off)[i] : a_scalar;
  const float y = use_b ? AT(const float, b, b_off)[i] : b_scalar;
  const float z = use_c ? AT(const float, c, c_off)[i] : c_scalar;
  AT(float, out, out_off)[i] = ew_apply(op, x, y, z, s0, s1);
}

// --- GEMM: C[b] = A[b] @ B[b], any strides ----------------------------------------------------------------
// Tiles of TS x TS in local memory; each work item computes WPT x WPT outputs (register blocking). Work
// groups of (TS/WPT) x (TS/WPT) items; the grid is (ceil(m/TS) * TS/WPT, ceil(n/TS) * TS/WPT, batch).
#define TS 32
#define WPT 4
#define RTS (TS / WPT)

__kernel __attribute__((reqd_work_group_size(RTS, RTS, 1)))
void gemm_f32(__global const float* A, ulong a_off, long sa_b, long sa_m, long sa_k, long a_elem,
              __global const float* B, ulong b_off, long sb_b, long sb_k, long sb_n, long b_elem,
              __global float* C, ulong c_off, long sc_b, long sc_m, long sc_n, long c_elem,
              long M, long N, long K) {
  __local float As[TS][TS + 1];
  __local float Bs[TS][TS + 1];
  const int tr = get_local_id(0), tc = get_local_id(1);
  const long row0 = get_group_id(0) * TS, col0 = get_group_id(1) * TS;
  const long batch = get_global_id(2);
  __global const float* a = AT(const float, A, a_off) + a_elem + batch * sa_b;
  __global const float* b = AT(const float, B, b_off) + b_elem + batch * sb_b;
  float acc[WPT][WPT];
  for (int i = 0; i < WPT; i++)
    for (int j = 0; j < WPT; j++) acc[i][j] = 0.0f;
  for (long k0 = 0; k0 < K; k0 += TS) {
    for (int i = 0; i < WPT; i++) {
      for (int j = 0; j < WPT; j++) {
        const int lr = tr * WPT + i, lc = tc * WPT + j;
        const long ar = row0 + lr, ak = k0 + lc;
        As[lr][lc] = (ar < M && ak < K) ? a[ar * sa_m + ak * sa_k] : 0.0f;
        const long bk = k0 + lr, bc = col0 + lc;
        Bs[lr][lc] = (bk < K && bc < N) ? b[bk * sb_k + bc * sb_n] : 0.0f;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int kk = 0; kk < TS; kk++) {
      float av[WPT], bv[WPT];
      for (int i = 0; i < WPT; i++) av[i] = As[tr * WPT + i][kk];
      for (int j = 0; j < WPT; j++) bv[j] = Bs[kk][tc * WPT + j];
      for (int i = 0; i < WPT; i++)
        for (int j = 0; j < WPT; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  __global float* c = AT(float, C, c_off) + c_elem + batch * sc_b;
  for (int i = 0; i < WPT; i++) {
    for (int j = 0; j < WPT; j++) {
      const long r = row0 + tr * WPT + i, col = col0 + tc * WPT + j;
      if (r < M && col < N) c[r * sc_m + col * sc_n] = acc[i][j];
    }
  }
}

// --- Reductions over a set of dimensions: out[kept] = reduce(in[kept, reduced]) ----------------------------
// |kg| iterates the kept dimensions (in's strides over them, og the output's), |rg| the reduced ones.
#define RED_SUM 0
#define RED_MEAN 1
#define RED_AMAX 2

__kernel void reduce_f32(__global float* out, ulong out_off, geom_t og, __global const float* in, ulong in_off,
                         geom_t kg, geom_t rg, long kept, long reduced, int op) {
  const long i = get_global_id(0);
  if (i >= kept) return;
  long oo, io, u0, u1;
  UNRAVEL(i, og, oo, og, io, kg, u0, og, u1, og);
  __global const float* x = AT(const float, in, in_off);
  float acc = op == RED_AMAX ? -INFINITY : 0.0f, comp = 0.0f;  // Kahan-compensated sums: long rows stay exact
  for (long j = 0; j < reduced; j++) {
    long r = j, off = io;
    for (int d = rg.ndim - 1; d >= 0; --d) {
      off += (r % rg.size[d]) * rg.stride[d];
      r /= rg.size[d];
    }
    const float v = x[off];
    if (op == RED_AMAX) {
      acc = isnan(v) || isnan(acc) ? NAN : fmax(acc, v);
    } else {
      const float yk = v - comp, t = acc + yk;
      comp = (t - acc) - yk;
      acc = t;
    }
  }
  if (op == RED_MEAN) acc /= (float)reduced;
  AT(float, out, out_off)[oo] = acc;
}

// --- Softmax along one dimension: one work item per row ---------------------------------------------------
// log_softmax: 0 softmax, 1 log_softmax, 2 safe softmax (rows that are all -inf give 0).
// |rows| iterates every dimension but the softmax one for in and out; |len| and the strides along it.
__kernel void softmax_f32(__global float* out, ulong out_off, geom_t og, long os,
                          __global const float* in, ulong in_off, geom_t ig, long is,
                          long rows, long len, int log_softmax) {
  const long i = get_global_id(0);
  if (i >= rows) return;
  long oo, io, u0, u1;
  UNRAVEL(i, og, oo, og, io, ig, u0, og, u1, og);
  __global const float* x = AT(const float, in, in_off) + io;
  __global float* y = AT(float, out, out_off) + oo;
  float m = -INFINITY;
  for (long j = 0; j < len; j++) m = fmax(m, x[j * is]);
  if (log_softmax == 2 && m == -INFINITY) {  // _safe_softmax: a row masked whole gives zeros, not NaN.
    for (long j = 0; j < len; j++) y[j * os] = 0.0f;
    return;
  }
  float sum = 0.0f, comp = 0.0f;
  for (long j = 0; j < len; j++) {
    const float yk = exp(x[j * is] - m) - comp, t = sum + yk;
    comp = (t - sum) - yk;
    sum = t;
  }
  if (log_softmax == 1) {
    const float lse = m + log(sum);
    for (long j = 0; j < len; j++) y[j * os] = x[j * is] - lse;
  } else {
    const float inv = 1.0f / sum;
    for (long j = 0; j < len; j++) y[j * os] = exp(x[j * is] - m) * inv;
  }
}

// grad_input of softmax (y = output): y * (g - sum(g * y)); of log_softmax: g - exp(y) * sum(g).
__kernel void softmax_backward_f32(__global float* out, ulong out_off, geom_t og, long os,
                                   __global const float* g, ulong g_off, geom_t gg, long gs,
                                   __global const float* y, ulong y_off, geom_t yg, long ys,
                                   long rows, long len, int log_softmax) {
  const long i = get_global_id(0);
  if (i >= rows) return;
  long oo, go, yo, u0;
  UNRAVEL(i, og, oo, og, go, gg, yo, yg, u0, og);
  __global const float* gr = AT(const float, g, g_off) + go;
  __global const float* yr = AT(const float, y, y_off) + yo;
  __global float* o = AT(float, out, out_off) + oo;
  float s = 0.0f, comp = 0.0f;
  for (long j = 0; j < len; j++) {
    const float yk = (log_softmax ? gr[j * gs] : gr[j * gs] * yr[j * ys]) - comp, t = s + yk;
    comp = (t - s) - yk;
    s = t;
  }
  for (long j = 0; j < len; j++) {
    o[j * os] = log_softmax ? gr[j * gs] - exp(yr[j * ys]) * s : yr[j * ys] * (gr[j * gs] - s);
  }
}

// --- Layer norm over the last |len| elements of each row (contiguous there) -------------------------------
// out = (x - mean) * rstd * w + b; mean and rstd per row (one work item per row).
__kernel void layer_norm_f32(__global float* out, ulong out_off, geom_t og,
                             __global float* mean, ulong mean_off, __global float* rstd, ulong rstd_off,
                             __global const float* x, ulong x_off, geom_t xg,
                             __global const float* w, ulong w_off, long w_elem, int has_w,
                             __global const float* b, ulong b_off, long b_elem, int has_b,
                             long rows, long len, float eps) {
  const long i = get_global_id(0);
  if (i >= rows) return;
  long oo, xo, u0, u1;
  UNRAVEL(i, og, oo, og, xo, xg, u0, og, u1, og);
  __global const float* xr = AT(const float, x, x_off) + xo;
  __global float* yr = AT(float, out, out_off) + oo;
  float s = 0.0f, comp = 0.0f;
  for (long j = 0; j < len; j++) {
    const float yk = xr[j] - comp, t = s + yk;
    comp = (t - s) - yk;
    s = t;
  }
  const float mu = s / (float)len;
  float v = 0.0f;
  comp = 0.0f;
  for (long j = 0; j < len; j++) {
    const float d = xr[j] - mu;
    const float yk = d * d - comp, t = v + yk;
    comp = (t - v) - yk;
    v = t;
  }
  const float r = rsqrt(v / (float)len + eps);
  __global const float* wr = AT(const float, w, w_off) + w_elem;
  __global const float* br = AT(const float, b, b_off) + b_elem;
  for (long j = 0; j < len; j++) {
    float y = (xr[j] - mu) * r;
    if (has_w) y *= wr[j];
    if (has_b) y += br[j];
    yr[j] = y;
  }
  AT(float, mean, mean_off)[i] = mu;
  AT(float, rstd, rstd_off)[i] = r;
}

// --- Gathers and scatters by index ------------------------------------------------------------------------
// index_select(self, dim, index): out[..., i, ...] = self[..., index[i], ...]. |og| iterates the result, |wg| holds
// self's strides over it (its size along |dim| is |rows|); an index out of range writes NaN.
__kernel void index_select_f32(__global float* out, ulong out_off, geom_t og, __global const float* w, ulong w_off,
                               geom_t wg, __global const long* idx, ulong idx_off, long is0, long i_elem, int dim,
                               long rows, long n) {
  const long g = get_global_id(0);
  if (g >= n) return;
  long r = g, oo = og.offset, wo = wg.offset;
  int bad = 0;
  for (int d = og.ndim - 1; d >= 0; --d) {
    const long x = r % og.size[d];
    r /= og.size[d];
    oo += x * og.stride[d];
    if (d == dim) {
      const long k = AT(const long, idx, idx_off)[i_elem + x * is0];
      bad = k < 0 || k >= rows;
      wo += (bad ? 0 : k) * wg.stride[d];
    } else {
      wo += x * wg.stride[d];
    }
  }
  AT(float, out, out_off)[oo] = bad ? NAN : AT(const float, w, w_off)[wo];
}

// grad_weight[r, c] = sum over i (in order, as the CPU sums) with index[i] == r != padding_idx of grad[i, c].
// |ig| iterates the indices (any shape and strides), |gg| the grad's leading dimensions over the same shape.
__kernel void embedding_backward_f32(__global float* out, ulong out_off, long os0, long os1, long o_elem,
                                     __global const float* g, ulong g_off, geom_t gg, long gs_col,
                                     __global const long* idx, ulong idx_off, geom_t ig,
                                     long n, long cols, long rows, long padding_idx) {
  const long t = get_global_id(0);
  if (t >= rows * cols) return;
  const long r = t / cols, c = t % cols;
  float s = 0.0f;
  if (r != padding_idx) {
    for (long i = 0; i < n; i++) {
      long io, go, u0, u1;
      UNRAVEL(i, ig, io, ig, go, gg, u0, ig, u1, ig);
      if (AT(const long, idx, idx_off)[io] == r) s += AT(const float, g, g_off)[go + c * gs_col];
    }
  }
  AT(float, out, out_off)[o_elem + r * os0 + c * os1] = s;
}

// --- nll_loss over [n, classes] log-probabilities with targets ----------------------------------------------
// reduction: 0 none (out per row), 1 mean, 2 sum. One work item does the whole sum in order (deterministic).
__kernel void nll_loss_f32(__global float* out, ulong out_off, long out_elem, long out_s,
                           __global float* total_w, ulong tw_off, long tw_elem,
                           __global const float* x, ulong x_off, long xs0, long xs1, long x_elem,
                           __global const long* tgt, ulong t_off, long ts0, long t_elem,
                           __global const float* w, ulong w_off, long ws0, long w_elem, int has_w,
                           long n, long classes, long ignore_index, int reduction) {
  if (get_global_id(0) != 0) return;
  float s = 0.0f, tw = 0.0f;
  for (long i = 0; i < n; i++) {
    const long t = AT(const long, tgt, t_off)[t_elem + i * ts0];
    float v = 0.0f;
    if (t != ignore_index && t >= 0 && t < classes) {
      const float wt = has_w ? AT(const float, w, w_off)[w_elem + t * ws0] : 1.0f;
      v = -AT(const float, x, x_off)[x_elem + i * xs0 + t * xs1] * wt;
      tw += wt;
    } else if (t != ignore_index) {
      v = NAN;
    }
    if (reduction == 0) AT(float, out, out_off)[out_elem + i * out_s] = v;
    else s += v;
  }
  if (reduction == 1) s /= tw;
  if (reduction != 0) AT(float, out, out_off)[out_elem] = s;
  AT(float, total_w, tw_off)[tw_elem] = reduction == 0 ? 0.0f : tw;  // As the CPU: no total for reduction none.
}

// grad_input[i, c] = c == target[i] ? -w[t] * g (/ total_weight for mean) : 0; one work item per element.
__kernel void nll_loss_backward_f32(__global float* out, ulong out_off, long os0, long os1, long o_elem,
                                    __global const float* g, ulong g_off, long gs, long g_elem,
                                    __global const long* tgt, ulong t_off, long ts0, long t_elem,
                                    __global const float* w, ulong w_off, long ws0, long w_elem, int has_w,
                                    __global const float* total_w, ulong tw_off, long tw_elem,
                                    long n, long classes, long ignore_index, int reduction) {
  const long e = get_global_id(0);
  if (e >= n * classes) return;
  const long i = e / classes, c = e % classes;
  const long t = AT(const long, tgt, t_off)[t_elem + i * ts0];
  float v = 0.0f;
  if (c == t && t != ignore_index) {
    const float wt = has_w ? AT(const float, w, w_off)[w_elem + t * ws0] : 1.0f;
    const float grad = AT(const float, g, g_off)[g_elem + (reduction == 0 ? i * gs : 0)];
    v = -wt * grad;
    if (reduction == 1) v /= AT(const float, total_w, tw_off)[tw_elem];
  }
  AT(float, out, out_off)[o_elem + i * os0 + c * os1] = v;
}

// --- Dtype-generic data movement: fill, tril / triu (by element size) --------------------------------------
__kernel void fill_bytes(__global uchar* out, ulong out_off, geom_t og, ulong pattern, int size, long n) {
  const long i = get_global_id(0);
  if (i >= n) return;
  long oo, u0, u1, u2;
  UNRAVEL(i, og, oo, og, u0, og, u1, og, u2, og);
  __global uchar* p = (__global uchar*)out + out_off + oo * size;
  for (int k = 0; k < size; k++) p[k] = (uchar)(pattern >> (8 * k));
}

// out[..., r, c] = keep ? in[..., r, c] : 0, keep = c - r <= diagonal (tril) or >= diagonal (triu).
__kernel void tri_bytes(__global uchar* out, ulong out_off, geom_t og, __global const uchar* in, ulong in_off,
                        geom_t ig, int size, long n, long diagonal, int upper) {
  const long i = get_global_id(0);
  if (i >= n) return;
  long oo, io, u0, u1;
  UNRAVEL(i, og, oo, og, io, ig, u0, og, u1, og);
  const long cols = og.size[og.ndim - 1], rows = og.size[og.ndim - 2];
  const long c = i % cols, r = (i / cols) % rows;
  const int keep = upper ? (c - r >= diagonal) : (c - r <= diagonal);
  __global uchar* p = (__global uchar*)out + out_off + oo * size;
  __global const uchar* q = (__global const uchar*)in + in_off + io * size;
  for (int k = 0; k < size; k++) p[k] = keep ? q[k] : 0;
}

// where(cond, a, b) with a bool condition and f32 values, broadcast.
__kernel void where_f32(__global float* out, ulong out_off, geom_t og, __global const uchar* cond, ulong c_off,
                        geom_t cg, __global const float* a, ulong a_off, geom_t ag, float a_scalar, int use_a,
                        __global const float* b, ulong b_off, geom_t bg, float b_scalar, int use_b, long n) {
  const long i = get_global_id(0);
  if (i >= n) return;
  long oo, co, ao, bo;
  UNRAVEL(i, og, oo, og, co, cg, ao, ag, bo, bg);
  const uchar c = ((__global const uchar*)cond + c_off)[co];
  const float x = use_a ? AT(const float, a, a_off)[ao] : a_scalar;
  const float y = use_b ? AT(const float, b, b_off)[bo] : b_scalar;
  AT(float, out, out_off)[oo] = c ? x : y;
}

// arange: out[i] = start + i * step, in f32 (dtype 0) or i64 (dtype 1), contiguous.
// (No doubles: devices without cl_khr_fp64 must build this program too.)
__kernel void arange(__global uchar* out, ulong out_off, long o_elem, long o_stride, float start, float step,
                     long start_i, long step_i, int is_long, long n) {
  const long i = get_global_id(0);
  if (i >= n) return;
  if (is_long) AT(long, out, out_off)[o_elem + i * o_stride] = start_i + i * step_i;
  else AT(float, out, out_off)[o_elem + i * o_stride] = fma((float)i, step, start);
}
