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
  float s1 = 0.0f, c1 = 0.0f, s2 = 0.0f, c2 = 0.0f;  // Compensated sums of g and g * xhat.
  for (long j = 0; j < len; j++) {
    const float g = has_w ? yr[j] * wr[j] : yr[j], gx = g * ((xr[j] - mu) * r);
    const float y1 = g - c1, t1 = s1 + y1;
    c1 = (t1 - s1) - y1;
    s1 = t1;
    const float y2 = gx - c2, t2 = s2 + y2;
    c2 = (t2 - s2) - y2;
    s2 = t2;
  }
  const float m1 = s1 / (float)len, m2 = s2 / (float)len;
  for (long j = 0; j < len; j++) {
    const float g = has_w ? yr[j] * wr[j] : yr[j];
    out[j] = r * (g - m1 - (xr[j] - mu) * r * m2);
  }
}

// The weight's and bias's gradients, one work item per column: dw = sum over rows of dy * xhat, db = of dy.
__kernel void layer_norm_backward_params_f32(__global float* dw, ulong dw_off, int has_dw,
                                             __global float* db, ulong db_off, int has_db,
                                             __global const float* dy, ulong dy_off, long dy_rs,
                                             __global const float* x, ulong x_off, long x_rs,
                                             __global const float* mean, ulong mean_off,
                                             __global const float* rstd, ulong rstd_off, long rows, long len) {
  const long j = get_global_id(0);
  if (j >= len) return;
  __global const float* m = AT(const float, mean, mean_off);
  __global const float* rs = AT(const float, rstd, rstd_off);
  __global const float* yc = AT(const float, dy, dy_off) + j;
  __global const float* xc = AT(const float, x, x_off) + j;
  float sw = 0.0f, cw = 0.0f, sb = 0.0f, cb = 0.0f;
  for (long i = 0; i < rows; i++) {
    const float g = yc[i * dy_rs], gx = g * ((xc[i * x_rs] - m[i]) * rs[i]);
    const float y1 = gx - cw, t1 = sw + y1;
    cw = (t1 - sw) - y1;
    sw = t1;
    const float y2 = g - cb, t2 = sb + y2;
    cb = (t2 - sb) - y2;
    sb = t2;
  }
  if (has_dw) AT(float, dw, dw_off)[j] = sw;
  if (has_db) AT(float, db, db_off)[j] = sb;
}
