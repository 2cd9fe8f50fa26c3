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
