// --- Reductions over a set of dimensions: out[kept] = reduce(in[kept, reduced]) ----------------------------
// |kg| iterates the kept dimensions (in's strides over them, og the output's), |rg| the reduced ones.
#define RED_SUM 0
#define RED_MEAN 1
#define RED_AMAX 2

// The element offset of the |j|-th element of the reduced dimensions |rg| from |base|.
inline long reduced_offset(long base, geom_t rg, long j) {
  for (int d = rg.ndim - 1; d >= 0; --d) {
    base += (j % rg.size[d]) * rg.stride[d];
    j /= rg.size[d];
  }
  return base;
}

// |layout| (ops_reduce.c): 1, one reduced dimension of stride 1 (rows summed 8 at a time); 2, one kept
// dimension of stride 1 in and out and one reduced (8 neighbouring outputs a work item, a float8 a step); 0 any.
__kernel void reduce_f32(__global float* out, ulong out_off, geom_t og, __global const float* in, ulong in_off,
                         geom_t kg, geom_t rg, long kept, long reduced, int op, int layout) {
  __global const float* x = AT(const float, in, in_off);
  __global float* y = AT(float, out, out_off);
  if (layout == 2) {  // Columns: out[k .. k + 7] = the sums over r of in[r * rs + k ..].
    const long k = get_global_id(0) * 8, rs = rg.stride[0];
    if (k >= kept) return;
    __global const float* col = x + kg.offset + k;
    if (k + 8 <= kept) {
      float8 s0 = 0.0f, c0 = 0.0f, s1 = 0.0f, c1 = 0.0f;  // Two chains: even and odd rows.
      long r = 0;
      for (; r + 2 <= reduced; r += 2) {
        KAHAN_ADD8(s0, c0, vload8(0, col + r * rs));
        KAHAN_ADD8(s1, c1, vload8(0, col + (r + 1) * rs));
      }
      if (r < reduced) KAHAN_ADD8(s0, c0, vload8(0, col + r * rs));
      float8 sum = (s0 - c0) + (s1 - c1);
      if (op == RED_MEAN) sum /= (float)reduced;
      vstore8(sum, 0, y + og.offset + k);
      return;
    }
    for (long e = k; e < kept; e++) {  // The last, partial block.
      float sum;
      ROW_SUM(sum, reduced, r, x[kg.offset + e + r * rs]);
      y[og.offset + e] = op == RED_MEAN ? sum / (float)reduced : sum;
    }
    return;
  }
  const long i = get_global_id(0);
  if (i >= kept) return;
  long oo, io, u0, u1;
  UNRAVEL(i, og, oo, og, io, kg, u0, og, u1, og);
  float acc;
  if (layout == 1) {
    __global const float* row = x + io;
    ROW_SUM8(acc, reduced, j, vload8(0, row + j), row[j]);
  } else if (op == RED_AMAX) {
    acc = -INFINITY;
    for (long j = 0; j < reduced; j++) {
      const float v = x[reduced_offset(io, rg, j)];
      acc = isnan(v) || isnan(acc) ? NAN : fmax(acc, v);
    }
  } else {  // Kahan-compensated sums: long rows stay exact.
    ROW_SUM(acc, reduced, j, x[reduced_offset(io, rg, j)]);
  }
  if (op == RED_MEAN) acc /= (float)reduced;
  y[oo] = acc;
}

// --- Softmax along one dimension: one work item per row ---------------------------------------------------
// log_softmax: 0 softmax, 1 log_softmax, 2 safe softmax (rows that are all -inf give 0).
// |rows| iterates every dimension but the softmax one for in and out; |len| and the strides along it.
// exp(x[j] - m) (8 of them), written to y[j] and returned: softmax's sum pass keeps what it computed.
inline float8 exp_kept8(__global const float* x, __global float* y, long j, float m) {
  const float8 e = exp(vload8(0, x + j) - m);
  vstore8(e, 0, y + j);
  return e;
}
inline float exp_kept(__global const float* x, __global float* y, long j, float m) { return y[j] = exp(x[j] - m); }

__kernel void softmax_f32(__global float* out, ulong out_off, geom_t og, long os,
                          __global const float* in, ulong in_off, geom_t ig, long is,
                          long rows, long len, int log_softmax) {
  const long i = get_global_id(0);
  if (i >= rows) return;
  long oo, io, u0, u1;
  UNRAVEL(i, og, oo, og, io, ig, u0, og, u1, og);
  __global const float* x = AT(const float, in, in_off) + io;
  __global float* y = AT(float, out, out_off) + oo;
  const int dense = is == 1 && os == 1;  // Rows of consecutive elements go 8 at a time.
  long j = 0;
  float m = -INFINITY, sum;
  if (dense) {
    float8 m8 = -INFINITY;
    for (; j + 8 <= len; j += 8) m8 = fmax(m8, vload8(0, x + j));
    const float4 m4 = fmax(m8.lo, m8.hi);
    const float2 m2 = fmax(m4.lo, m4.hi);
    m = fmax(m2.lo, m2.hi);
  }
  for (; j < len; j++) m = fmax(m, x[j * is]);
  if (log_softmax == 2 && m == -INFINITY) {  // _safe_softmax: a row masked whole gives zeros, not NaN.
    for (j = 0; j < len; j++) y[j * os] = 0.0f;
    return;
  }
  if (dense && log_softmax != 1) {  // exp once an element: kept in the output, then scaled.
    ROW_SUM8(sum, len, k, exp_kept8(x, y, k, m), exp_kept(x, y, k, m));
    const float inv = 1.0f / sum;
    for (j = 0; j + 8 <= len; j += 8) vstore8(vload8(0, y + j) * inv, 0, y + j);
    for (; j < len; j++) y[j] *= inv;
    return;
  }
  if (dense) ROW_SUM8(sum, len, k, exp(vload8(0, x + k) - m), exp(x[k] - m));
  else ROW_SUM(sum, len, k, exp(x[k * is] - m));
  const float shift = log_softmax == 1 ? m + log(sum) : m, scale = log_softmax == 1 ? 1.0f : 1.0f / sum;
  j = 0;
  if (dense) {
    for (; j + 8 <= len; j += 8) vstore8(vload8(0, x + j) - shift, 0, y + j);
  }
  for (; j < len; j++) y[j * os] = log_softmax == 1 ? x[j * is] - shift : exp(x[j * is] - shift) * scale;
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
  const int dense = os == 1 && gs == 1 && ys == 1;
  float s;
  if (dense && log_softmax) ROW_SUM8(s, len, j, vload8(0, gr + j), gr[j]);
  else if (dense) ROW_SUM8(s, len, j, vload8(0, gr + j) * vload8(0, yr + j), gr[j] * yr[j]);
  else if (log_softmax) ROW_SUM(s, len, j, gr[j * gs]);
  else ROW_SUM(s, len, j, gr[j * gs] * yr[j * ys]);
  long j = 0;
  if (dense) {
    for (; j + 8 <= len; j += 8) {
      const float8 gv = vload8(0, gr + j), yv = vload8(0, yr + j);
      vstore8(log_softmax ? gv - exp(yv) * s : yv * (gv - s), 0, o + j);
    }
  }
  for (; j < len; j++) {
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
  float s, v;
  ROW_SUM8(s, len, j, vload8(0, xr + j), xr[j]);
  const float mu = s / (float)len;
  ROW_SUM8(v, len, j, (vload8(0, xr + j) - mu) * (vload8(0, xr + j) - mu), (xr[j] - mu) * (xr[j] - mu));
  const float r = rsqrt(v / (float)len + eps);
  __global const float* wr = AT(const float, w, w_off) + w_elem;
  __global const float* br = AT(const float, b, b_off) + b_elem;
  long j = 0;
  for (; j + 8 <= len; j += 8) {
    float8 y = (vload8(0, xr + j) - mu) * r;
    if (has_w) y *= vload8(0, wr + j);
    if (has_b) y += vload8(0, br + j);
    vstore8(y, 0, yr + j);
  }
  for (; j < len; j++) {
    float y = (xr[j] - mu) * r;
    if (has_w) y *= wr[j];
    if (has_b) y += br[j];
    yr[j] = y;
  }
  AT(float, mean, mean_off)[i] = mu;
  AT(float, rstd, rstd_off)[i] = r;
}

// --- Layer norm backward ---------------------------------------------------------------------------------
// The input's gradient, one work item per row (rows at a fixed stride, each contiguous over |len|):
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w and xhat = (x - mean) * rstd.
__kernel void layer_norm_backward_f32(__global float* dx, ulong dx_off, long dx_rs,
                                      __global const float* dy, ulong dy_off, long dy_rs,
                                      __global const float* x, ulong x_off, long x_rs,
                                      __global const float* mean, ulong mean_off, __global const float* rstd,
                                      ulong rstd_off, __global const float* w, ulong w_off, int has_w,
                                      long rows, long len) {
  const long i = get_global_id(0);
  if (i >= rows) return;
  __global const float* yr = AT(const float, dy, dy_off) + i * dy_rs;
  __global const float* xr = AT(const float, x, x_off) + i * x_rs;
  __global const float* wr = AT(const float, w, w_off);
  __global float* out = AT(float, dx, dx_off) + i * dx_rs;
  const float mu = AT(const float, mean, mean_off)[i], r = AT(const float, rstd, rstd_off)[i];
  float s1, s2;  // The sums of g and of g * xhat.
  if (has_w) {
    ROW_SUM8(s1, len, j, vload8(0, yr + j) * vload8(0, wr + j), yr[j] * wr[j]);
    ROW_SUM8(s2, len, j, vload8(0, yr + j) * vload8(0, wr + j) * ((vload8(0, xr + j) - mu) * r),
             yr[j] * wr[j] * ((xr[j] - mu) * r));
  } else {
    ROW_SUM8(s1, len, j, vload8(0, yr + j), yr[j]);
    ROW_SUM8(s2, len, j, vload8(0, yr + j) * ((vload8(0, xr + j) - mu) * r), yr[j] * ((xr[j] - mu) * r));
  }
  const float m1 = s1 / (float)len, m2 = s2 / (float)len;
  long j = 0;
  for (; j + 8 <= len; j += 8) {
    const float8 g = has_w ? vload8(0, yr + j) * vload8(0, wr + j) : vload8(0, yr + j);
    vstore8(r * (g - m1 - (vload8(0, xr + j) - mu) * r * m2), 0, out + j);
  }
  for (; j < len; j++) {
    const float g = has_w ? yr[j] * wr[j] : yr[j];
    out[j] = r * (g - m1 - (xr[j] - mu) * r * m2);
  }
}

// The weight's and bias's gradients, 8 columns a work item: dw = sum over rows of dy * xhat, db = of dy.
__kernel void layer_norm_backward_params_f32(__global float* dw, ulong dw_off, int has_dw,
                                             __global float* db, ulong db_off, int has_db,
                                             __global const float* dy, ulong dy_off, long dy_rs,
                                             __global const float* x, ulong x_off, long x_rs,
                                             __global const float* mean, ulong mean_off,
                                             __global const float* rstd, ulong rstd_off, long rows, long len) {
  const long j = get_global_id(0) * 8;
  if (j >= len) return;
  __global const float* m = AT(const float, mean, mean_off);
  __global const float* rs = AT(const float, rstd, rstd_off);
  __global const float* yc = AT(const float, dy, dy_off) + j;
  __global const float* xc = AT(const float, x, x_off) + j;
  __global float* w = AT(float, dw, dw_off) + j;
  __global float* b = AT(float, db, db_off) + j;
  if (j + 8 <= len) {
    float8 sw = 0.0f, cw = 0.0f, sb = 0.0f, cb = 0.0f;
    for (long i = 0; i < rows; i++) {
      const float8 g = vload8(0, yc + i * dy_rs);
      KAHAN_ADD8(sw, cw, g * ((vload8(0, xc + i * x_rs) - m[i]) * rs[i]));
      KAHAN_ADD8(sb, cb, g);
    }
    if (has_dw) vstore8(sw - cw, 0, w);
    if (has_db) vstore8(sb - cb, 0, b);
    return;
  }
  for (long k = 0; k < len - j; k++) {  // The last, partial block.
    float sw, sb;
    ROW_SUM(sw, rows, i, yc[i * dy_rs + k] * ((xc[i * x_rs + k] - m[i]) * rs[i]));
    ROW_SUM(sb, rows, i, yc[i * dy_rs + k]);
    if (has_dw) w[k] = sw;
    if (has_db) b[k] = sb;
  }
}
