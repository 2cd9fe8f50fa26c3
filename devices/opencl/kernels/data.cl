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
