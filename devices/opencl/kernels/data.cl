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

// --- Copies between any two dtypes (kernel.h's HAL_DTYPE_* codes), strided and broadcast ---------------------
// Integers go through long (i64 stays exact), floating point through double where the device has it (float
// otherwise: f64 operands are then declined by the host); f16 and bf16 by their bits (vload_half / vstore_half
// are core OpenCL; bf16 rounds to nearest even). Float to integer truncates, as C and torch's CPU do; to bool
// is != 0.
#ifdef cl_khr_fp64
typedef double real_t;
#else
typedef float real_t;
#endif
inline int dt_is_float(int dt) { return dt <= DT_F64; }

inline real_t load_real(__global const uchar* p, long i, int dt) {
  switch (dt) {
    case DT_F32: return ((__global const float*)p)[i];
    case DT_F16: return vload_half(i, (__global const half*)p);
    case DT_BF16: return as_float((uint)((__global const ushort*)p)[i] << 16);
#ifdef cl_khr_fp64
    case DT_F64: return ((__global const double*)p)[i];
#endif
    default: return 0;
  }
}

inline long load_long(__global const uchar* p, long i, int dt) {
  switch (dt) {
    case DT_I8: return ((__global const char*)p)[i];
    case DT_U8: case DT_BOOL: return p[i];
    case DT_I16: return ((__global const short*)p)[i];
    case DT_I32: return ((__global const int*)p)[i];
    case DT_I64: return ((__global const long*)p)[i];
    default: return 0;
  }
}

__kernel void cast_any(__global uchar* out, ulong out_off, geom_t og, int odt, __global const uchar* in,
                       ulong in_off, geom_t ig, int idt, long n) {
  const long i = get_global_id(0);
  if (i >= n) return;
  long oo, io, u0, u1;
  UNRAVEL(i, og, oo, og, io, ig, u0, og, u1, og);
  __global uchar* o = out + out_off;
  __global const uchar* x = in + in_off;
  const int from_float = dt_is_float(idt);
  const real_t r = from_float ? load_real(x, io, idt) : (real_t)load_long(x, io, idt);
  const long l = from_float ? (long)r : load_long(x, io, idt);
  switch (odt) {
    case DT_F32: ((__global float*)o)[oo] = (float)r; break;
    case DT_F16: vstore_half_rte((float)r, oo, (__global half*)o); break;
    case DT_BF16: ((__global ushort*)o)[oo] = to_bf16((float)r); break;
#ifdef cl_khr_fp64
    case DT_F64: ((__global double*)o)[oo] = r; break;
#endif
    case DT_BOOL: o[oo] = from_float ? r != 0 : l != 0; break;
    case DT_I8: ((__global char*)o)[oo] = (char)l; break;
    case DT_U8: o[oo] = (uchar)l; break;
    case DT_I16: ((__global short*)o)[oo] = (short)l; break;
    case DT_I32: ((__global int*)o)[oo] = (int)l; break;
    case DT_I64: ((__global long*)o)[oo] = l; break;
  }
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
