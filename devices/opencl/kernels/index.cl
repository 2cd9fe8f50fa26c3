// --- Gathers and scatters by index ------------------------------------------------------------------------
// index_select(self, dim, index): out[..., i, ...] = self[..., index[i], ...]. |og| iterates the result, |wg| holds
// self's strides over it (its size along |dim| is |rows|); an index out of range faults (FAULT) and writes 0.
__kernel void index_select_f32(__global float* out, ulong out_off, geom_t og, __global const float* w, ulong w_off,
                               geom_t wg, __global const long* idx, ulong idx_off, long is0, long i_elem, int dim,
                               long rows, long n, __global int* fault, int code) {
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
  if (bad) FAULT(fault, code);
  AT(float, out, out_off)[oo] = bad ? 0.0f : AT(const float, w, w_off)[wo];
}

// grad_weight[r, c] = sum over i (in order, as the CPU sums) with index[i] == r != padding_idx of grad[i, c].
// |ig| iterates the indices (any shape and strides), |gg| the grad's leading dimensions over the same shape.
// Deterministic, no atomics: work item
// (c, r) owns columns [c * EMB_COLS, +EMB_COLS) of rows [r * EMB_ROWS, +EMB_ROWS): it zeroes them, then scans
// every index and adds the rows that fall in its block. Grid (ceil(cols / EMB_COLS), ceil(rows / EMB_ROWS)).
#define EMB_COLS 16
#define EMB_ROWS 4096
__kernel void embedding_backward_f32(__global float* out, ulong out_off, long os0, long os1, long o_elem,
                                     __global const float* g, ulong g_off, geom_t gg, long gs_col,
                                     __global const long* idx, ulong idx_off, geom_t ig,
                                     long n, long cols, long rows, long padding_idx) {
  const long c0 = get_global_id(0) * EMB_COLS, r0 = get_global_id(1) * EMB_ROWS;
  if (c0 >= cols || r0 >= rows) return;
  const int w = (int)min((long)EMB_COLS, cols - c0);
  const long r1 = min(r0 + EMB_ROWS, rows);
  __global float* o = AT(float, out, out_off) + o_elem + c0 * os1;
  for (long r = r0; r < r1; r++) {
    for (int c = 0; c < w; c++) o[r * os0 + c * os1] = 0.0f;
  }
  for (long i = 0; i < n; i++) {
    long io, go, u0, u1;
    UNRAVEL(i, ig, io, ig, go, gg, u0, ig, u1, ig);
    const long r = AT(const long, idx, idx_off)[io];
    if (r < r0 || r >= r1 || r == padding_idx) continue;
    __global const float* gr = AT(const float, g, g_off) + go + c0 * gs_col;
    for (int c = 0; c < w; c++) o[r * os0 + c * os1] += gr[c * gs_col];
  }
}

// --- nll_loss over [n, classes] log-probabilities with targets ----------------------------------------------
// reduction: 0 none (out per row), 1 mean, 2 sum. One work item does the whole sum in order (deterministic).
// A target out of range (not ignore_index) faults (FAULT).
__kernel void nll_loss_f32(__global float* out, ulong out_off, long out_elem, long out_s,
                           __global float* total_w, ulong tw_off, long tw_elem,
                           __global const float* x, ulong x_off, long xs0, long xs1, long x_elem,
                           __global const long* tgt, ulong t_off, long ts0, long t_elem,
                           __global const float* w, ulong w_off, long ws0, long w_elem, int has_w,
                           long n, long classes, long ignore_index, int reduction, __global int* fault, int code) {
  if (get_global_id(0) != 0) return;
  float s = 0.0f, tw = 0.0f;
  for (long i = 0; i < n; i++) {
    const long t = AT(const long, tgt, t_off)[t_elem + i * ts0];
    float v = 0.0f;
    if (t != ignore_index && t >= 0 && t < classes) {
      const float wt = has_w ? AT(const float, w, w_off)[w_elem + t * ws0] : 1.0f;
      v = -AT(const float, x, x_off)[x_elem + i * xs0 + t * xs1] * wt;
      tw += wt;
    } else if (t != ignore_index) {  // The CPU raises "Target t is out of bounds".
      FAULT(fault, code);
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

// gather(self, dim, index): out[..., i, ...] = self[..., index[..., i, ...], ...], out of index's shape. |og|,
// |ig| iterate out and index, |sg| self with index's sizes (its stride along |dim| is used for the index read);
// elements of |size| bytes. An index outside [0, rows) faults.
__kernel void gather_bytes(__global uchar* out, ulong out_off, geom_t og, __global const uchar* self, ulong s_off,
                           geom_t sg, __global const long* idx, ulong idx_off, geom_t ig, int dim, long rows,
                           int size, long n, __global int* fault, int code) {
  const long e = get_global_id(0);
  if (e >= n) return;
  long oo, so, io, u0;
  geom_t rest = sg;  // self without |dim|: the index picks the position there.
  rest.stride[dim] = 0;
  UNRAVEL(e, og, oo, og, so, rest, io, ig, u0, og);
  const long dim_stride = sg.stride[dim];
  const long k = AT(const long, idx, idx_off)[io];
  __global uchar* dst = out + out_off + oo * size;
  if (k < 0 || k >= rows) {
    FAULT(fault, code);
    for (int b = 0; b < size; b++) dst[b] = 0;
    return;
  }
  __global const uchar* src = self + s_off + (so + k * dim_stride) * size;
  for (int b = 0; b < size; b++) dst[b] = src[b];
}

// scatter_add(out, dim, index, src) in place: out[..., index[..., i, ...], ...] += src[..., i, ...]. One work
// item per fiber of index along |dim| (every other coordinate): it adds its fiber in order (as the CPU does),
// and no two fibers write the same element, so no atomics and the sums are deterministic. |fg| iterates the
// fibers (index's shape with |dim| of size 1) with index's, src's and out's strides; |len| is index's size
// along |dim|, its strides there is_d, ss_d, os_d. An index outside [0, rows) faults and is skipped.
__kernel void scatter_add_f32(__global float* out, ulong out_off, geom_t fg, geom_t og, long os_d,
                              __global const long* idx, ulong idx_off, geom_t ig, long is_d,
                              __global const float* src, ulong s_off, geom_t sg, long ss_d, long len, long rows,
                              long fibers, __global int* fault, int code) {
  const long f = get_global_id(0);
  if (f >= fibers) return;
  long oo, io, so, u0;
  UNRAVEL(f, fg, oo, og, io, ig, so, sg, u0, fg);
  __global float* o = AT(float, out, out_off);
  __global const long* x = AT(const long, idx, idx_off);
  __global const float* v = AT(const float, src, s_off);
  for (long i = 0; i < len; i++) {
    const long k = x[io + i * is_d];
    if (k < 0 || k >= rows) {
      FAULT(fault, code);
      continue;
    }
    o[oo + k * os_d] += v[so + i * ss_d];
  }
}
