// The opencl plugin's operators (kernel.h), shared by their files: ops.c (the table, each device's program,
// arguments, op_launch) and one file per family of kernels: ops_elementwise.c, ops_gemm.c, ops_reduce.c
// (reductions, softmax, layer norm), ops_index.c (gathers, scatters, losses), ops_data.c (fill, where, cat, ...),
// ops_conv.c (convolution, pooling), ops_optim.c (the fused AdamW step).
//
// Each operator is a row of the table: its ATen name and dtypes (what op_list declares), a kind saying how its
// schema arguments map onto a kernel, and a code of that kind. A call the kernels do not cover is declined
// (DECLINE: HAL_STATUS_UNIMPLEMENTED, nothing queued). Tensors arrive as the caller has them (kernel.h): any
// strides, not broadcast; the host lays each input's geometry out against the iteration space (strides 0 where
// broadcast), so the kernels only index.
#ifndef HAL_OPENCL_OPS_H_
#define HAL_OPENCL_OPS_H_

#include "opencl.h"

#define MAXD 8
#define F32 HAL_DTYPE_BIT(HAL_DTYPE_F32)
#define I64 HAL_DTYPE_BIT(HAL_DTYPE_I64)
#define BOOL HAL_DTYPE_BIT(HAL_DTYPE_BOOL)
#define ANY_DATA (F32 | I64 | BOOL | HAL_DTYPE_BIT(HAL_DTYPE_I32) | HAL_DTYPE_BIT(HAL_DTYPE_U8) | HAL_DTYPE_BIT(HAL_DTYPE_F64))
#define HALF (HAL_DTYPE_BIT(HAL_DTYPE_F16) | HAL_DTYPE_BIT(HAL_DTYPE_BF16))
// Elementwise ops: results f32 / f16 / bf16 (computed in float), operands of any of these promoted.
#define FLOATS (F32 | HALF | I64 | BOOL | HAL_DTYPE_BIT(HAL_DTYPE_I32) | HAL_DTYPE_BIT(HAL_DTYPE_F64))

typedef struct geom_t {  // kernels/common.cl's geom_t, by value.
  int64_t size[MAXD];
  int64_t stride[MAXD];
  int64_t offset;
  int32_t ndim;
  int32_t pad;
} geom_t;

enum ew_op {  // kernels/elementwise.cl's EW_*
  EW_ADD, EW_SUB, EW_MUL, EW_DIV, EW_NEG, EW_EXP, EW_LOG, EW_SQRT, EW_RSQRT, EW_TANH, EW_SIGMOID, EW_RELU,
  EW_GELU, EW_SILU, EW_ABS, EW_FILL, EW_COPY, EW_GELU_BW, EW_SILU_BW, EW_THRESHOLD_BW, EW_SIGMOID_BW, EW_TANH_BW,
  EW_ADDCMUL, EW_ADDCDIV, EW_LERP, EW_MAXIMUM, EW_MINIMUM, EW_POW_SCALAR, EW_RECIPROCAL,
};
enum { RED_SUM, RED_MEAN, RED_AMAX };

typedef enum kind_e {
  K_UNARY,       // (self) -> out
  K_BINARY,      // (self, other[, alpha][, out]) -> out; in-place variants write self, out= ones out
  K_TERNARY,     // addcmul / addcdiv: (self, t1, t2, value); lerp: (self, end, weight)
  K_GELU,        // (self, approximate)
  K_GELU_BW,     // (grad, self, approximate)
  K_BACKWARD,    // (grad, x or y[, threshold])
  K_POW_SCALAR,  // (self, exponent)
  K_FILL,        // (self, value)
  K_COPY,        // (self, src, non_blocking): f32 elementwise, other dtypes (and changes of dtype) cast_any
  K_MM,          // (self, mat2)
  K_BMM,         // (self, mat2)
  K_REDUCE,      // sum.dim_IntList / mean.dim (self, dim, keepdim, dtype); amax (self, dim, keepdim)
  K_SOFTMAX,     // (self, dim, half_to_float)
  K_SOFTMAX_BW,  // (grad_output, output, dim, input_dtype)
  K_LAYER_NORM,  // native_layer_norm (input, normalized_shape, weight?, bias?, eps) -> (out, mean, rstd)
  K_LAYER_NORM_BW,  // native_layer_norm_backward (grad_out, input, normalized_shape, mean, rstd, weight?,
                    // bias?, output_mask) -> (grad_input, grad_weight, grad_bias), each absent where masked
  K_INDEX_SELECT,  // (self, dim, index): rows of a 2-d self
  K_GATHER,      // gather (self, dim, index, sparse_grad)
  K_SCATTER_ADD,  // scatter_add / scatter_add_ (self, dim, index, src)
  K_EMB_BW,      // embedding_dense_backward (grad_output, indices, num_weights, padding_idx, scale_grad_by_freq)
  K_NLL,         // nll_loss_forward (self, target, weight?, reduction, ignore_index) -> (output, total_weight)
  K_NLL_BW,      // nll_loss_backward (grad_output, self, target, weight?, reduction, ignore_index, total_weight)
  K_TRI,         // tril / triu (self, diagonal); code 0 lower, 1 upper
  K_WHERE,       // where.self (condition, self, other)
  K_CAT,         // cat (tensors, dim): a copy of each into its slice of the result
  K_ARANGE,      // arange.start_out (start, end, step, out)
  K_ZERO,        // zero_ (self)
  K_CONV,        // convolution (input, weight, bias?, stride, padding, dilation, transposed, output_padding, groups)
  K_CONV_BW,     // convolution_backward (grad_output, input, weight, bias_sizes?, ..., output_mask) -> 3, absent where masked
  K_MAX_POOL,    // max_pool2d_with_indices (code 0) and its backward (code 1)
  K_FUSED_ADAMW,  // _fused_adamw_ (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, ...) -> ()
} kind_t;

typedef struct op_t {
  hal_op_t decl;
  kind_t kind;
  int code;  // The ew_op, the reduction, log-softmax (1) or softmax (0).
} op_t;


// The kernels of the program (kernels/*.cl), by index.
enum {
  KN_EW, KN_EW_CONTIG, KN_GEMM, KN_REDUCE, KN_SOFTMAX, KN_SOFTMAX_BW, KN_LAYER_NORM, KN_INDEX_SELECT, KN_EMB_BW,
  KN_NLL, KN_NLL_BW, KN_FILL, KN_TRI, KN_WHERE, KN_ARANGE, KN_GEMM_PACK_A, KN_GEMM_PACK_B, KN_GEMM_PACKED,
  KN_LAYER_NORM_BW, KN_LAYER_NORM_BW_PARAMS, KN_ADAMW, KN_IM2COL, KN_COL2IM, KN_MAX_POOL, KN_MAX_POOL_BW, KN_CAST, KN_GATHER, KN_SCATTER_ADD, KN_EW_ANY, KN_COUNT
};

// The operator library of one device: its program, built on first use, and its kernels.
struct ocl_ops_t {
  cl_program program;
  cl_kernel kernels[KN_COUNT];
  pthread_mutex_t launch;  // clSetKernelArg + enqueue of the device's kernels are one step.
  int cpu;                 // A CPU device: GEMM packs (kernels/gemm.cl).
  int vec;                 // Its preferred float vector width (the build's GEMM_VEC).
  int chunk;               // Elements per work item of elementwise kernels (the build's EW_CHUNK).
};

// |op|'s code for the stream's fault word (ocl_stream_fault; 0 is "no fault").
int32_t ocl_op_code(const op_t* op);

// The device's library, building it on first use.
hal_status_t device_ops(int32_t device, ocl_ops_t** out);

#define DECLINE(...) ocl_fail(HAL_STATUS_UNIMPLEMENTED, "opencl: " __VA_ARGS__)

// A tensor as a kernel sees it: its buffer, the byte offset of its storage, its geometry.
typedef struct operand_t {
  cl_mem mem;
  cl_ulong byte_offset;
  const hal_tensor_t* t;  // NULL: a scalar (or an unused operand)
  float scalar;
} operand_t;

int64_t numel(const hal_tensor_t* t);
size_t dtype_size(hal_dtype_t d);  // hal_dtype_size of the element types the kernels support; 0: declined
// Bytes of storage from |t|'s data pointer that it touches (0 when empty).
uint64_t span_bytes(const hal_tensor_t* t);
// Resolves a tensor of |dtype| (-1: any the byte kernels move) for the stream's device; an empty tensor has no
// buffer.
hal_status_t typed_operand(int32_t device, const hal_tensor_t* t, hal_dtype_t dtype, operand_t* out);
hal_status_t tensor_operand(int32_t device, const hal_tensor_t* t, operand_t* out);
// A value that is a tensor, or a number standing for one (a Python number PyTorch wrapped).
hal_status_t value_operand(int32_t device, const hal_value_t* v, operand_t* out);
// The same for an elementwise operand: a tensor of any dtype ew_any loads (f32, f16, bf16, f64, integers, bool).
hal_status_t elementwise_operand(int32_t device, const hal_value_t* v, operand_t* out);
double number(const hal_value_t* v);
// |t|'s geometry against an iteration space of |ndim| dimensions of sizes |sizes| (numpy broadcasting).
void broadcast_geom(const hal_tensor_t* t, int32_t ndim, const int64_t* sizes, geom_t* g);
// |t|'s geometry over |sizes| of its own |ndim| dimensions, with its own strides (no broadcasting).
void own_geometry(const hal_tensor_t* t, int32_t ndim, const int64_t* sizes, geom_t* g);
int contiguous_as(const hal_tensor_t* t, const hal_tensor_t* like);
// Merges the dimensions of an iteration space of |*ndim| dimensions for |count| operands' strides: drops
// dimensions of size 1 and merges a dimension into the next where every operand steps through both as one.
void coalesce(int32_t* ndim, int64_t* sizes, int64_t (*strides)[MAXD], int count);

// Kernel arguments, set in order.
typedef struct args_t {
  cl_kernel k;
  cl_uint i;
  cl_int err;
} args_t;

void arg(args_t* a, size_t size, const void* value);
// A buffer argument: (buffer, byte offset); an operand without a buffer passes a NULL buffer.
void buffer_arg(args_t* a, const operand_t* o);
hal_status_t enqueue(hal_stream_t stream, cl_command_queue q, ocl_ops_t* ops, args_t* a, cl_uint dims,
                     const size_t* global, const size_t* local, const char* what);

static inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The launchers, one per kind of kernel; each checks what it is given and declines what it does not cover.
hal_status_t run_elementwise(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_tensor_t* out, const operand_t in[3], int used, float s0, float s1);
hal_status_t run_gemm(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                      const hal_tensor_t* A, const hal_tensor_t* B, const hal_tensor_t* C);
hal_status_t run_reduce(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                        const hal_value_t* args, uint64_t num_args, const hal_tensor_t* out);
hal_status_t run_softmax(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                         const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_layer_norm(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                            const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results);
hal_status_t run_layer_norm_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                                     const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results);
hal_status_t run_index_select(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                              const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_gather(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                        const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_scatter_add(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_embedding_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                                    const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_nll(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                     const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results);
hal_status_t run_fill_bytes(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                            const hal_value_t* value, const hal_tensor_t* out);
hal_status_t run_cast(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                      const hal_tensor_t* src, const hal_tensor_t* out);
hal_status_t run_tri(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                     const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_where(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                       const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_cat(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                     const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_arange(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                        const hal_value_t* args, const hal_tensor_t* out);

hal_status_t run_convolution(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_value_t* args, const hal_tensor_t* out);
hal_status_t run_convolution_backward(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                                      const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results);
hal_status_t run_max_pool2d(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                            const hal_value_t* args, const hal_tensor_t* results, uint64_t num_results);
hal_status_t run_fused_adamw(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_value_t* args, uint64_t num_args);

#endif  // HAL_OPENCL_OPS_H_
