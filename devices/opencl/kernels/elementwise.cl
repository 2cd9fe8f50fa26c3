// --- Elementwise: out = f(a, b, c) ------------------------------------------------------------------------
// op codes (ops.h: enum ew_op)
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

// Each op as a loop over a run of elements, the op chosen once per run (a switch inside the loop keeps the
// compiler from vectorizing it). LOOP(expr) is the kernel's loop, with a, b and c the operands' elements;
// uniform parameters (s0) pick between forms outside the loop.
#define EW_CASES(LOOP)                                                                                 \
  case EW_ADD: LOOP(a + s0 * b); break;                                                                \
  case EW_SUB: LOOP(a - s0 * b); break;                                                                \
  case EW_MUL: LOOP(a * b); break;                                                                     \
  case EW_DIV: LOOP(a / b); break;                                                                     \
  case EW_NEG: LOOP(-a); break;                                                                        \
  case EW_EXP: LOOP(exp(a)); break;                                                                    \
  case EW_LOG: LOOP(log(a)); break;                                                                    \
  case EW_SQRT: LOOP(sqrt(a)); break;                                                                  \
  case EW_RSQRT: LOOP(rsqrt(a)); break;                                                                \
  case EW_TANH: LOOP(tanh(a)); break;                                                                  \
  case EW_SIGMOID: LOOP(1.0f / (1.0f + exp(-a))); break;                                               \
  case EW_RELU: LOOP(a > 0.0f ? a : (isnan(a) ? a : 0.0f)); break;                                     \
  case EW_GELU:                                                                                        \
    if (s0 != 0.0f) LOOP(0.5f * a * (1.0f + tanh(SQRT_2_OVER_PI * (a + 0.044715f * a * a * a))));      \
    else LOOP(0.5f * a * (1.0f + fast_erf(a * INV_SQRT_2)));                                           \
    break;                                                                                             \
  case EW_SILU: LOOP(a / (1.0f + exp(-a))); break;                                                     \
  case EW_ABS: LOOP(fabs(a)); break;                                                                   \
  case EW_FILL: LOOP(s1); break;                                                                       \
  case EW_COPY: LOOP(a); break;                                                                        \
  case EW_GELU_BW:                                                                                     \
    if (s0 != 0.0f) LOOP(gelu_tanh_backward(a, b));                                                    \
    else LOOP(a * (0.5f * (1.0f + fast_erf(b * INV_SQRT_2)) + b * INV_SQRT_2PI * exp(-0.5f * b * b))); \
    break;                                                                                             \
  case EW_SILU_BW: LOOP(silu_backward(a, b)); break;                                                   \
  case EW_THRESHOLD_BW: LOOP(b <= s0 ? 0.0f : a); break;                                               \
  case EW_SIGMOID_BW: LOOP(a * (1.0f - b) * b); break;                                                 \
  case EW_TANH_BW: LOOP(a * (1.0f - b * b)); break;                                                    \
  case EW_ADDCMUL: LOOP(a + s0 * b * c); break;                                                        \
  case EW_ADDCDIV: LOOP(a + s0 * b / c); break;                                                        \
  case EW_LERP:                                                                                        \
    if (fabs(s0) < 0.5f) LOOP(a + s0 * (b - a));                                                       \
    else LOOP(b - (b - a) * (1.0f - s0));                                                              \
    break;                                                                                             \
  case EW_MAXIMUM: LOOP((isnan(a) || isnan(b)) ? NAN : fmax(a, b)); break;                             \
  case EW_MINIMUM: LOOP((isnan(a) || isnan(b)) ? NAN : fmin(a, b)); break;                             \
  case EW_POW_SCALAR:                                                                                  \
    if (s0 == 2.0f) LOOP(a * a);                                                                       \
    else if (s0 == 0.5f) LOOP(sqrt(a));                                                                \
    else LOOP(pow(a, s0));                                                                             \
    break;                                                                                             \
  case EW_RECIPROCAL: LOOP(1.0f / a); break;

// fast_erf: erf as a rational function on [-4, 4] (beyond, erf is +-1 in float): the approximation Eigen and
// XLA use, within 4.2e-7 of erf everywhere (measured against libm over [-6, 6]). The OpenCL runtime's erf may be
// scalar code (pocl's: ~10 ns an element, 15x this); this one vectorizes. NaN gives a number here, but GELU
// multiplies by x, so NaN still propagates through both GELU forms and their backward.
#define EW_HELPERS(T)                                                                    \
  inline T __attribute__((overloadable)) fast_erf(T v) {                                 \
    const T x = clamp(v, -4.0f, 4.0f), x2 = x * x;                                       \
    T p = fma(x2, -2.72614225801306e-10f, 2.77068142495902e-08f);                        \
    p = fma(x2, p, -2.10102402082508e-06f);                                              \
    p = fma(x2, p, -5.69250639462346e-05f);                                              \
    p = fma(x2, p, -7.34990630326855e-04f);                                              \
    p = fma(x2, p, -2.95459980854025e-03f);                                              \
    p = fma(x2, p, -1.60960333262415e-02f);                                              \
    T q = fma(x2, -1.45660718464996e-05f, -2.13374055278905e-04f);                       \
    q = fma(x2, q, -1.68282697438203e-03f);                                              \
    q = fma(x2, q, -7.37332916720468e-03f);                                              \
    q = fma(x2, q, -1.42647390514189e-02f);                                              \
    return x * p / q;                                                                    \
  }                                                                                      \
  inline T __attribute__((overloadable)) gelu_tanh_backward(T g, T x) {                  \
    const T t = tanh(SQRT_2_OVER_PI * (x + 0.044715f * x * x * x));                      \
    const T d_inner = SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x * x);                \
    return g * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * d_inner);               \
  }                                                                                      \
  inline T __attribute__((overloadable)) silu_backward(T g, T x) {                       \
    const T sig = 1.0f / (1.0f + exp(-x));                                               \
    return g * sig * (1.0f + x * (1.0f - sig));                                          \
  }
// Each helper for single elements and for runs of 8 (float8: what the loops below use where they can).
EW_HELPERS(float)
EW_HELPERS(float8)

// EW_CHUNK (a build option: 64 on CPU devices, whose work items are loops on a core; 1 on GPUs, whose
// neighbouring work items must touch neighbouring elements) is the run of elements one work item computes.
#ifndef EW_CHUNK
#define EW_CHUNK 1
#endif

// Every operand is read at every element, a scalar operand too (its value is then the scalar given: the host
// points its buffer at the result's elements, which are there to read), so the loop has no conditional loads
// and vectorizes. EW_LOAD8 reads 8 consecutive elements of operands whose stride is 1 (0: one element, repeated).
#define EW_LOAD(j)                                                                                              \
  const float la_ = pa[(j) * as], lb_ = pb[(j) * bs], lc_ = pc[(j) * cs];                                       \
  const float a = use_a ? la_ : a_scalar, b = use_b ? lb_ : b_scalar, c = use_c ? lc_ : c_scalar;
#define EW_LD8(p, s, j) ((s) ? vload8(0, (p) + (j)) : (float8)((p)[0]))
#define EW_LOAD8(j)                                                                                             \
  const float8 la_ = EW_LD8(pa, as, j), lb_ = EW_LD8(pb, bs, j), lc_ = EW_LD8(pc, cs, j);                       \
  const float8 a = use_a ? la_ : (float8)(a_scalar), b = use_b ? lb_ : (float8)(b_scalar),                    \
               c = use_c ? lc_ : (float8)(c_scalar);

// The loop of a run of |len| elements: 8 at a time where every stride is 0 or 1 (|vec|), then one at a time.
#define EW_RUN(expr, OUT_AT)                                            \
  do {                                                                  \
    int j = 0;                                                          \
    if (vec) {                                                          \
      for (; j + 8 <= len; j += 8) {                                    \
        EW_LOAD8(j)                                                     \
        vstore8((expr), 0, o + (j));                                    \
      }                                                                 \
    }                                                                   \
    for (; j < len; j++) {                                              \
      EW_LOAD(j)                                                        \
      o[OUT_AT] = (expr);                                               \
    }                                                                   \
  } while (0)

// Rows of the iteration space: |og|, |ag|, |bg|, |cg| iterate every dimension but the innermost (the host has
// merged what dimensions it could), whose length is |inner| and whose strides are os, as, bs, cs. Grid
// (ceil(inner / EW_CHUNK), rows).
__kernel void ew_f32(__global float* out, ulong out_off, geom_t og, long os,
                     __global const float* ga, ulong a_off, geom_t ag, long as, float a_scalar,
                     __global const float* gb, ulong b_off, geom_t bg, long bs, float b_scalar,
                     __global const float* gc, ulong c_off, geom_t cg, long cs, float c_scalar,
                     int op, float s0, float s1, long inner, int use_a, int use_b, int use_c) {
  const long j0 = get_global_id(0) * EW_CHUNK, row = get_global_id(1);
  if (j0 >= inner) return;
  const int len = (int)min((long)EW_CHUNK, inner - j0);
  long oo, ao, bo, co;
  UNRAVEL(row, og, oo, og, ao, ag, bo, bg, co, cg);
  __global float* o = AT(float, out, out_off) + oo + j0 * os;
  __global const float* pa = AT(const float, ga, a_off) + ao + j0 * as;
  __global const float* pb = AT(const float, gb, b_off) + bo + j0 * bs;
  __global const float* pc = AT(const float, gc, c_off) + co + j0 * cs;
  const int vec = os == 1 && as <= 1 && bs <= 1 && cs <= 1;
#define LOOP(expr) EW_RUN(expr, j * os)
  switch (op) { EW_CASES(LOOP) }
#undef LOOP
}

// The same for tensors contiguous in the result's shape (no broadcast): linear indices from each tensor's first
// element (the host folds its element offset into the byte offset). Grid ceil(n / EW_CHUNK).
__kernel void ew_contig_f32(__global float* out, ulong out_off, __global const float* ga, ulong a_off,
                            float a_scalar, __global const float* gb, ulong b_off, float b_scalar,
                            __global const float* gc, ulong c_off, float c_scalar,
                            int op, float s0, float s1, long n, int use_a, int use_b, int use_c) {
  const long start = get_global_id(0) * EW_CHUNK;
  if (start >= n) return;
  const int len = (int)min((long)EW_CHUNK, n - start);
  const long as = 1, bs = 1, cs = 1;
  __global float* o = AT(float, out, out_off) + start;
  __global const float* pa = AT(const float, ga, a_off) + start;
  __global const float* pb = AT(const float, gb, b_off) + start;
  __global const float* pc = AT(const float, gc, c_off) + start;
  const int vec = 1;
#define LOOP(expr) EW_RUN(expr, j)
  switch (op) { EW_CASES(LOOP) }
#undef LOOP
}

// The same over operands of other dtypes (kernel.h's codes odt, adt, bdt, cdt): each element is loaded as
// float, the op computed in float and the result stored in its own dtype (f32, f16 or bf16, rounded to nearest
// even), as torch's CPU kernels do for f16 / bf16 and for operands promoted to a floating result (an i64 or
// bool operand of an f32 op). One element at a time; the all-f32 kernels above are the fast path.
__kernel void ew_any(__global uchar* out, ulong out_off, geom_t og, long os,
                     __global const uchar* ga, ulong a_off, geom_t ag, long as, float a_scalar,
                     __global const uchar* gb, ulong b_off, geom_t bg, long bs, float b_scalar,
                     __global const uchar* gc, ulong c_off, geom_t cg, long cs, float c_scalar,
                     int op, float s0, float s1, long inner, int use_a, int use_b, int use_c,
                     int odt, int adt, int bdt, int cdt) {
  const long j0 = get_global_id(0) * EW_CHUNK, row = get_global_id(1);
  if (j0 >= inner) return;
  const int len = (int)min((long)EW_CHUNK, inner - j0);
  long oo, ao, bo, co;
  UNRAVEL(row, og, oo, og, ao, ag, bo, bg, co, cg);
  __global uchar* o = out + out_off;
  __global const uchar* pa = ga + a_off;
  __global const uchar* pb = gb + b_off;
  __global const uchar* pc = gc + c_off;
#define LOOP(expr)                                                                    \
  do {                                                                                \
    for (int j = 0; j < len; j++) {                                                   \
      const long jj = j0 + j;                                                         \
      const float a = use_a ? load_f(pa, ao + jj * as, adt) : a_scalar;               \
      const float b = use_b ? load_f(pb, bo + jj * bs, bdt) : b_scalar;               \
      const float c = use_c ? load_f(pc, co + jj * cs, cdt) : c_scalar;               \
      store_f(o, oo + jj * os, odt, (expr));                                          \
    }                                                                                 \
  } while (0)
  switch (op) { EW_CASES(LOOP) }
#undef LOOP
}
