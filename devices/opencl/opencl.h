// The opencl plugin's internals shared by its files: opencl.c (loading, devices, memory, streams, events,
// copies, programs) and ops.c with its family files (the operators, kernel.h; ops.h).
#ifndef HAL_OPENCL_OPENCL_H_
#define HAL_OPENCL_OPENCL_H_

#include <pthread.h>
#include <stdint.h>

#include "cl_api.h"
#include "hal/hal.h"

extern hal_cl_api_t g_cl;  // The OpenCL entry points, loaded at initialize.

typedef struct ocl_allocation_t {
  uintptr_t base;  // The device pointer handed out (an address of the device's reserved range).
  uint64_t size;
  cl_mem mem;
} ocl_allocation_t;

typedef struct ocl_ops_t ocl_ops_t;  // ops.h: the operator library of one device.

typedef struct ocl_device_t {
  cl_platform_id platform;
  cl_device_id id;
  cl_context context;  // One per platform, shared by its devices (events and copies work across them).
  char name[HAL_DEVICE_NAME_MAX];
  char vendor[HAL_DEVICE_VENDOR_MAX];
  int32_t kind;
  uint64_t capacity, max_alloc;
  uint32_t compute_units, clock_mhz;
  int fp64;    // The device computes doubles (CL_DEVICE_DOUBLE_FP_CONFIG != 0).
  int has_il;  // clCreateProgramWithIL works (CL_DEVICE_IL_VERSION names one).
  // Memory: allocations sorted by base, inside [range, range + range_size), a PROT_NONE reservation.
  pthread_mutex_t mutex;
  ocl_allocation_t* allocations;
  size_t allocation_count, allocation_capacity;
  uintptr_t range;
  uint64_t range_size, next, used;
  ocl_ops_t* ops;  // Built on first use (ops.c).
} ocl_device_t;

extern ocl_device_t* g_devices;
extern int32_t g_device_count;

// The error model: every entry returns through these.
hal_status_t ocl_ok(void);
__attribute__((format(printf, 2, 3))) hal_status_t ocl_fail(hal_status_t status, const char* format, ...);
// A failed OpenCL call: the status for |err|, the message "opencl: <call>: CL_<NAME> (<err>)[: detail]", the
// native code |err|.
hal_status_t ocl_cl_fail(cl_int err, const char* call, const char* detail);
const char* ocl_error_name(cl_int err);
hal_status_t ocl_check_device(int32_t device);

// The allocation holding [ptr, ptr + size) on |device|: its buffer and the byte offset of ptr in it.
// INVALID_ARGUMENT (with a message) unless the range lies in one live allocation.
hal_status_t ocl_resolve(int32_t device, const void* ptr, uint64_t size, cl_mem* out_mem, uint64_t* out_offset);

// Streams (opencl.c). ocl_stream_queue checks |stream| and gives its queue and device.
hal_status_t ocl_stream_queue(hal_stream_t stream, cl_command_queue* out_queue, int32_t* out_device);
// Hands the event of a command just enqueued on |stream| to the stream, which watches it for the sticky-error
// rule of stream.h and releases it; |what| names the command in the error message.
void ocl_stream_track(hal_stream_t stream, cl_event event, const char* what);

// Temporary memory for the kernels an operator queues next on |stream|, each kind grown as needed, never shrunk,
// counted in the device's memory in use; OUT_OF_MEMORY with the figures where it cannot grow. Taking either
// holds the stream for the calling thread's operator (another thread's waits) until ocl_stream_temp_done, once
// per successful take, after its last kernel is queued.
//  - ocl_stream_scratch: a buffer of at least |size| bytes, retained for the caller, who releases it.
//  - ocl_stream_temp: an allocation of at least |size| bytes with a device address (tensors can lie in it).
hal_status_t ocl_stream_scratch(hal_stream_t stream, uint64_t size, cl_mem* out);
hal_status_t ocl_stream_temp(hal_stream_t stream, uint64_t size, void** out);
void ocl_stream_temp_done(hal_stream_t stream);
// The stream's fault word, an int buffer that kernels checking their indices set to the operator's code
// (ocl_op_code) on the first bad one (atomic_cmpxchg from 0). Every later synchronize (or idle query) reads it
// and, when set, reports HAL_STATUS_DEVICE_ERROR naming the operator (the sticky-error rule) and clears it.
hal_status_t ocl_stream_fault(hal_stream_t stream, cl_mem* out);

// Builds |source| for |device| (clCreateProgramWithSource + clBuildProgram); INVALID_ARGUMENT with the build
// log when it does not build.
hal_status_t ocl_build(int32_t device, const char* source, size_t length, const char* options, cl_program* out);

// Operators (ops.c).
hal_status_t ocl_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count);
hal_status_t ocl_op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                           const hal_tensor_t* results, uint64_t num_results);
void ocl_ops_release(ocl_device_t* device);
// The operator a fault word's code names (ops.c), "an operator" for a code it does not know.
const char* ocl_op_name(int32_t code);

#endif  // HAL_OPENCL_OPENCL_H_
