// The opencl plugin's operator kernels (OpenCL C 1.2), built once per device on first use (ops.c); the files of kernels/ are one program, common.cl first.
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

// The element offsets of linear index i (< the number of elements) of the iteration space |it| in up to four
// tensors.
#define UNRAVEL(i, it, o0, g0, o1, g1, o2, g2, o3, g3)                                    \
  do {                                                                                   \
    long r_ = (i);                                                                       \
    o0 = g0.offset; o1 = g1.offset; o2 = g2.offset; o3 = g3.offset;                      \
    for (int d_ = it.ndim - 1; d_ > 0; --d_) {                                           \
      long x_ = r_ % it.size[d_];                                                        \
      r_ /= it.size[d_];                                                                 \
      o0 += x_ * g0.stride[d_]; o1 += x_ * g1.stride[d_];                                \
      o2 += x_ * g2.stride[d_]; o3 += x_ * g3.stride[d_];                                \
    }                                                                                    \
    if (it.ndim > 0) { /* what is left is the index along dimension 0 (i lies in the space) */ \
      o0 += r_ * g0.stride[0]; o1 += r_ * g1.stride[0];                                  \
      o2 += r_ * g2.stride[0]; o3 += r_ * g3.stride[0];                                  \
    }                                                                                    \
  } while (0)

// Kahan-compensated summation. KAHAN_ADD adds |v| to the sum |s| whose lost low part is |c| (the sum is s - c).
#define KAHAN_ADD(s, c, v)                 \
  do {                                     \
    const float y_ = (v) - (c);            \
    const float t_ = (s) + y_;             \
    (c) = (t_ - (s)) - y_;                 \
    (s) = t_;                              \
  } while (0)

// out = the sum of |expr| over j = 0 .. n - 1, compensated, in 8 independent lanes (j % 8) combined at the end:
// one lane's chain of dependent additions is what bounds a row's time on a CPU, 8 of them fill its pipelines.
#define ROW_SUM(out, n, j, expr)                                            \
  do {                                                                      \
    float s_[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};          \
    float c_[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};          \
    const long n_ = (n), full_ = n_ / 8 * 8;                                \
    for (long b_ = 0; b_ < full_; b_ += 8) {                                \
      _Pragma("unroll") for (int k_ = 0; k_ < 8; k_++) {                    \
        const long j = b_ + k_;                                             \
        KAHAN_ADD(s_[k_], c_[k_], (expr));                                  \
      }                                                                     \
    }                                                                       \
    for (long j = full_; j < n_; j++) KAHAN_ADD(s_[j - full_], c_[j - full_], (expr)); \
    float sum_ = 0.0f, sumc_ = 0.0f;                                        \
    for (int k_ = 0; k_ < 8; k_++) KAHAN_ADD(sum_, sumc_, s_[k_] - c_[k_]); \
    (out) = sum_ - sumc_;                                                       \
  } while (0)

#define KAHAN_ADD8(s, c, v)                \
  do {                                     \
    const float8 y8_ = (v) - (c);          \
    const float8 t8_ = (s) + y8_;          \
    (c) = (t8_ - (s)) - y8_;               \
    (s) = t8_;                             \
  } while (0)

// ROW_SUM for a contiguous row: |expr8| is elements j .. j + 7 as a float8 (vload8 of each operand at j), |expr1|
// element j; 4 float8 lanes (32 partial sums) of compensated sums, added pairwise; about 20x ROW_SUM's speed on
// pocl.
#define ROW_SUM8(out, n, j, expr8, expr1)                                            \
  do {                                                                               \
    float8 s0_ = 0.0f, s1_ = 0.0f, s2_ = 0.0f, s3_ = 0.0f;                           \
    float8 c0_ = 0.0f, c1_ = 0.0f, c2_ = 0.0f, c3_ = 0.0f;                           \
    const long n_ = (n);                                                             \
    long b_ = 0;                                                                     \
    for (; b_ + 32 <= n_; b_ += 32) {                                                \
      { const long j = b_; KAHAN_ADD8(s0_, c0_, (expr8)); }                          \
      { const long j = b_ + 8; KAHAN_ADD8(s1_, c1_, (expr8)); }                      \
      { const long j = b_ + 16; KAHAN_ADD8(s2_, c2_, (expr8)); }                     \
      { const long j = b_ + 24; KAHAN_ADD8(s3_, c3_, (expr8)); }                     \
    }                                                                                \
    for (; b_ + 8 <= n_; b_ += 8) { const long j = b_; KAHAN_ADD8(s0_, c0_, (expr8)); } \
    const float8 v8_ = ((s0_ - c0_) + (s1_ - c1_)) + ((s2_ - c2_) + (s3_ - c3_)); /* pairwise from here */ \
    const float4 v4_ = v8_.lo + v8_.hi;                                              \
    const float2 v2_ = v4_.lo + v4_.hi;                                              \
    float sum_ = v2_.lo + v2_.hi, sumc_ = 0.0f;                                      \
    for (; b_ < n_; b_++) { const long j = b_; KAHAN_ADD(sum_, sumc_, (expr1)); }    \
    (out) = sum_ - sumc_;                                                            \
  } while (0)

// An index out of range: the stream's fault word (ocl_stream_fault) takes |code|, the operator's, unless an
// earlier fault holds it; the stream's next synchronize reports it.
#define FAULT(fault, code) atomic_cmpxchg((fault), 0, (code))

// --- Dtypes: kernel.h's HAL_DTYPE_* codes, and loads / stores of any of them as float ---------------------------
#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_F64 3
#define DT_I8 5
#define DT_U8 6
#define DT_I32 7
#define DT_I64 8
#define DT_BOOL 9
#define DT_I16 10

inline ushort to_bf16(float f) {  // Round to nearest even; NaN stays a (quiet) NaN.
  const uint u = as_uint(f);
  if (isnan(f)) return (ushort)((u >> 16) | 0x40);
  return (ushort)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// Element |i| of a tensor of dtype |dt| at |p|, as float (f64 and integers rounded to the nearest float).
inline float load_f(__global const uchar* p, long i, int dt) {
  switch (dt) {
    case DT_F32: return ((__global const float*)p)[i];
    case DT_F16: return vload_half(i, (__global const half*)p);
    case DT_BF16: return as_float((uint)((__global const ushort*)p)[i] << 16);
#ifdef cl_khr_fp64
    case DT_F64: return (float)((__global const double*)p)[i];
#endif
    case DT_I64: return (float)((__global const long*)p)[i];
    case DT_I32: return (float)((__global const int*)p)[i];
    case DT_I16: return (float)((__global const short*)p)[i];
    case DT_I8: return (float)((__global const char*)p)[i];
    default: return (float)p[i];  // u8, bool
  }
}

// Stores |v| as element |i| of a tensor of dtype |dt| (f32, f16 or bf16: rounded to nearest even).
inline void store_f(__global uchar* p, long i, int dt, float v) {
  if (dt == DT_F16) vstore_half_rte(v, i, (__global half*)p);
  else if (dt == DT_BF16) ((__global ushort*)p)[i] = to_bf16(v);
  else ((__global float*)p)[i] = v;
}
