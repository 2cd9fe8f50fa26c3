// HAL plugin ABI 1.1: compute on the device. Two optional ways, each a group of entries a plugin provides
// together or not at all (the loader refuses a plugin with half a group and names what is missing):
//
//  1. Operators (op_list, op_launch). The plugin declares, per device, which ATen operators it implements
//     ("aten::mm", "aten::add.Tensor": PyTorch's own names, core ATen IR first) and for which dtypes, and
//     runs them on a stream through ONE boxed calling convention (hal_value_t): no per-operator C signature
//     is ever added to this header. The caller (HAL's torch bridge) computes every result's dtype and
//     geometry with the operator's meta function and allocates the results; the plugin only computes.
//     Operators a plugin does not declare still run (through PyTorch's decompositions into ones it declares,
//     else the CPU), so a plugin starts with none and adds kernels one at a time.
//  2. Programs (program_create, program_destroy, kernel_create, kernel_destroy, kernel_launch). Vendor code
//     loaded at run time, from source or binary in a format the plugin names ("opencl-c", "spirv", "ptx",
//     "cubin", ...), and launched over a grid, as Unified Runtime's urProgramCreateWithBinary /
//     urKernelCreate / urEnqueueKernelLaunch and OpenCL do: kernels need not all be fixed at build time.
//
// Both queue work on a stream (stream.h): ordered with copies, events and collectives on it, failures of
// the queued work sticky on the stream. Enqueueing never waits for device work.
#ifndef HAL_KERNEL_H_
#define HAL_KERNEL_H_

#include "hal/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- Values of the boxed calling convention -------------------------------------------------------------

// A strided tensor in device memory. Element (i0, i1, ...) lies at element index
// offset + i0 * strides[0] + i1 * strides[1] + ... from |data|, in units of the dtype's size.
typedef struct hal_tensor_t {
  // Device pointer to the start of the tensor's storage, from memory_allocate of the launch's device
  // (possibly base + offset: see memory.h). NULL only when the tensor has no elements.
  void* data;
  hal_dtype_t dtype;
  int32_t ndim;            // 0 for a scalar (one element).
  const int64_t* sizes;    // |ndim| entries, each >= 0.
  const int64_t* strides;  // |ndim| entries, in elements, each >= 0 (0: broadcast along that dimension).
  int64_t offset;          // In elements, >= 0.
} hal_tensor_t;

typedef enum hal_value_kind_e {
  HAL_VALUE_NONE = 0,         // An optional argument that is absent (None).
  HAL_VALUE_TENSOR = 1,       // u.tensor
  HAL_VALUE_INT = 2,          // u.i: int, SymInt, and Scalars that hold an integer
  HAL_VALUE_FLOAT = 3,        // u.f: float, and Scalars that hold a floating-point number
  HAL_VALUE_BOOL = 4,         // u.i: 0 or 1 (bool, and Scalars that hold a bool)
  HAL_VALUE_INT_LIST = 5,     // u.ints: int[], SymInt[], and bool[] as 0 / 1 (output_mask)
  HAL_VALUE_FLOAT_LIST = 6,   // u.floats: float[]
  HAL_VALUE_TENSOR_LIST = 7,  // u.tensors: Tensor[] (an absent element of Tensor?[] has data NULL, ndim -1)
  HAL_VALUE_STRING = 8,       // u.string: str (NUL-terminated), e.g. gelu's approximate="tanh"
  HAL_VALUE_DTYPE = 9,        // u.dtype: ScalarType, e.g. sum's dtype=
} hal_value_kind_e;

typedef struct hal_value_t {
  int32_t kind;  // hal_value_kind_e
  int32_t reserved;
  union {
    hal_tensor_t tensor;
    int64_t i;
    double f;
    struct {
      const int64_t* data;
      uint64_t size;
    } ints;
    struct {
      const double* data;
      uint64_t size;
    } floats;
    struct {
      const hal_tensor_t* data;
      uint64_t size;
    } tensors;
    const char* string;
    hal_dtype_t dtype;
  } u;
} hal_value_t;

// --- Operators ------------------------------------------------------------------------------------------

// The bit of |dtype| in hal_op_t.dtypes.
#define HAL_DTYPE_BIT(dtype) (UINT64_C(1) << (dtype))

// One operator a device implements.
typedef struct hal_op_t {
  // The ATen operator and overload, as PyTorch names them: "aten::add.Tensor", "aten::mm" (an operator
  // with the default overload has no suffix). The schema of that overload is the calling convention.
  const char* name;
  // HAL_DTYPE_BIT of every dtype the operator's tensors (arguments and results) may have. The caller
  // offers a call only when each of its tensors has one of these; the plugin may still decline a
  // combination (op_launch returns HAL_STATUS_UNIMPLEMENTED), e.g. mixed dtypes it does not promote.
  uint64_t dtypes;
} hal_op_t;

// Writes the operators local device |device| implements: |*out_ops| points to |*out_count| entries that
// belong to the plugin and stay valid (unchanged) until shutdown; each name appears once. Zero operators is
// valid. Thread-safe; never blocks.
typedef hal_status_t (*hal_op_list_fn)(int32_t device, const hal_op_t** out_ops, uint64_t* out_count);

// Queues operator |op| (an index into |stream|'s device's op_list) on |stream|.
//  - |args|: the overload's schema arguments, all of them, in schema order, defaults filled in. Tensors
//    lie on |stream|'s device.
//  - |results|: one tensor per schema return (a Tensor[] return contributes one per element), allocated
//    by the caller with the dtype, sizes and strides the operator's meta function gives. A return that
//    aliases a written argument (in-place and out= overloads, "Tensor(a!)") is that argument, again.
//    Results may overlap arguments only that way. A return the meta function leaves undefined (a gradient
//    output_mask turns off) is absent: data NULL, ndim -1; the plugin writes nothing for it.
// Returns HAL_STATUS_OK once queued. Returns HAL_STATUS_UNIMPLEMENTED, having queued nothing, for a call
// the plugin does not cover (a dtype combination, a dimensionality, a layout of strides): the caller then
// runs the operator another way. HAL_STATUS_INVALID_ARGUMENT for malformed values (a kind the schema does
// not allow, an op index out of range).
// Ownership: everything |args| and |results| point to (descriptors, size and stride arrays, lists,
// strings) is valid only during the call; the plugin copies what the queued work needs. Device memory must
// stay allocated until the work completes, which the caller ensures. Thread-safe; never blocks on device
// work.
typedef hal_status_t (*hal_op_launch_fn)(hal_stream_t stream, uint64_t op, const hal_value_t* args,
                                         uint64_t num_args, const hal_tensor_t* results, uint64_t num_results);

// --- Programs and kernels -------------------------------------------------------------------------------

typedef struct hal_program_s* hal_program_t;  // Opaque; owned by whoever created it.
typedef struct hal_kernel_s* hal_kernel_t;    // Opaque; owned by whoever created it.

// Builds a program for local device |device| from |size_bytes| bytes at |data| in |format| (a name the
// plugin documents: "opencl-c" for OpenCL C source, "spirv", ...), with plugin-defined build |options|
// (NUL-terminated; NULL or "" for none). |data| is only read during the call. Fails with
// HAL_STATUS_UNIMPLEMENTED for a format the plugin does not take (the message lists those it takes) and
// HAL_STATUS_INVALID_ARGUMENT when the build fails (the message carries the build log). Thread-safe; blocks
// while it builds.
typedef hal_status_t (*hal_program_create_fn)(int32_t device, const char* format, const void* data,
                                              uint64_t size_bytes, const char* options, hal_program_t* out_program);
// Releases |program|. Its kernels must have been destroyed. Thread-safe.
typedef hal_status_t (*hal_program_destroy_fn)(hal_program_t program);

// The kernel (entry point) |name| of |program|; HAL_STATUS_INVALID_ARGUMENT naming it when there is none.
// Thread-safe.
typedef hal_status_t (*hal_kernel_create_fn)(hal_program_t program, const char* name, hal_kernel_t* out_kernel);
// Releases |kernel|. Launches already queued still run. Thread-safe.
typedef hal_status_t (*hal_kernel_destroy_fn)(hal_kernel_t kernel);

typedef enum hal_kernel_arg_kind_e {
  // A device pointer (base + offset allowed) on the launch's device: |value| is the pointer itself.
  // How it reaches the kernel's parameters is the format's convention (e.g. the opencl plugin passes a
  // buffer and a byte offset: two parameters). |size| is unused.
  HAL_KERNEL_ARG_BUFFER = 0,
  // |size| bytes at |value|, passed by value (a scalar or a small struct). Copied during the call.
  HAL_KERNEL_ARG_BYTES = 1,
  // |size| bytes of work-group local (shared) memory; |value| is unused.
  HAL_KERNEL_ARG_LOCAL = 2,
} hal_kernel_arg_kind_e;

typedef struct hal_kernel_arg_t {
  int32_t kind;  // hal_kernel_arg_kind_e
  int32_t reserved;
  uint64_t size;
  const void* value;
} hal_kernel_arg_t;

// Queues |kernel| on |stream| over a grid of global[0] x global[1] x global[2] work items in work groups
// of local[0] x local[1] x local[2] (|local| NULL: the plugin chooses) with |args| (valid during the call
// only). |stream| must belong to the device the kernel's program was built for. Fails at once, queuing
// nothing, for arguments the kernel cannot take (count, sizes) with HAL_STATUS_INVALID_ARGUMENT.
// Thread-safe; never blocks on device work.
typedef hal_status_t (*hal_kernel_launch_fn)(hal_stream_t stream, hal_kernel_t kernel, const uint64_t global[3],
                                             const uint64_t* local, const hal_kernel_arg_t* args, uint64_t num_args);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HAL_KERNEL_H_
