// The part of the OpenCL API the opencl plugin uses, declared here so that the plugin builds without OpenCL
// headers and loads the ICD loader (libOpenCL.so.1) at run time: types, constants and function types from the
// Khronos ABI (KhronosGroup/OpenCL-Headers, CL/cl.h, OpenCL 1.2 plus clCreateProgramWithIL of 2.1), and the
// table of entry points opencl.c fills with dlsym.
#ifndef HAL_OPENCL_CL_API_H_
#define HAL_OPENCL_CL_API_H_

#include <stddef.h>
#include <stdint.h>

typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef int64_t cl_long;
typedef uint64_t cl_ulong;
typedef cl_uint cl_bool;
typedef cl_ulong cl_bitfield;
typedef cl_bitfield cl_device_type;
typedef cl_uint cl_platform_info;
typedef cl_uint cl_device_info;
typedef cl_bitfield cl_mem_flags;
typedef cl_bitfield cl_command_queue_properties;
typedef intptr_t cl_context_properties;
typedef cl_uint cl_program_build_info;
typedef cl_uint cl_event_info;
typedef cl_uint cl_profiling_info;
typedef cl_ulong cl_queue_properties;
typedef cl_uint cl_kernel_info;
typedef cl_uint cl_kernel_arg_info;
typedef cl_uint cl_kernel_arg_address_qualifier;

typedef struct _cl_platform_id* cl_platform_id;
typedef struct _cl_device_id* cl_device_id;
typedef struct _cl_context* cl_context;
typedef struct _cl_command_queue* cl_command_queue;
typedef struct _cl_mem* cl_mem;
typedef struct _cl_program* cl_program;
typedef struct _cl_kernel* cl_kernel;
typedef struct _cl_event* cl_event;

#define CL_SUCCESS 0
#define CL_FALSE 0
#define CL_TRUE 1

#define CL_DEVICE_TYPE_CPU (1 << 1)
#define CL_DEVICE_TYPE_GPU (1 << 2)
#define CL_DEVICE_TYPE_ACCELERATOR (1 << 3)
#define CL_DEVICE_TYPE_ALL 0xFFFFFFFF

#define CL_PLATFORM_NAME 0x0902
#define CL_DEVICE_TYPE 0x1000
#define CL_DEVICE_MAX_COMPUTE_UNITS 0x1002
#define CL_DEVICE_MAX_WORK_GROUP_SIZE 0x1004
#define CL_DEVICE_MAX_CLOCK_FREQUENCY 0x100C
#define CL_DEVICE_MAX_MEM_ALLOC_SIZE 0x1010
#define CL_DEVICE_GLOBAL_MEM_SIZE 0x101F
#define CL_DEVICE_LOCAL_MEM_SIZE 0x1023
#define CL_DEVICE_NAME 0x102B
#define CL_DEVICE_VENDOR 0x102C
#define CL_DEVICE_VERSION 0x102F
#define CL_DEVICE_DOUBLE_FP_CONFIG 0x1032
#define CL_DEVICE_IL_VERSION 0x105B

#define CL_CONTEXT_PLATFORM 0x1084
#define CL_MEM_READ_WRITE (1 << 0)
#define CL_MEM_COPY_HOST_PTR (1 << 5)
#define CL_QUEUE_PROFILING_ENABLE (1 << 1)
#define CL_QUEUE_PROPERTIES 0x1093

#define CL_EVENT_COMMAND_EXECUTION_STATUS 0x11D3
#define CL_COMPLETE 0x0
#define CL_RUNNING 0x1
#define CL_SUBMITTED 0x2
#define CL_QUEUED 0x3
#define CL_PROFILING_COMMAND_START 0x1282
#define CL_PROFILING_COMMAND_END 0x1283
#define CL_PROGRAM_BUILD_LOG 0x1183
#define CL_KERNEL_NUM_ARGS 0x1191
#define CL_KERNEL_ARG_ADDRESS_QUALIFIER 0x1196
#define CL_KERNEL_ARG_TYPE_NAME 0x1198
#define CL_KERNEL_ARG_ADDRESS_GLOBAL 0x119B
#define CL_KERNEL_ARG_ADDRESS_LOCAL 0x119C
#define CL_KERNEL_ARG_ADDRESS_CONSTANT 0x119D
#define CL_KERNEL_ARG_ADDRESS_PRIVATE 0x119E
#define CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT 0x100A

// Error codes (cl.h); opencl.c names them in messages.
#define CL_DEVICE_NOT_FOUND -1
#define CL_MEM_OBJECT_ALLOCATION_FAILURE -4
#define CL_OUT_OF_RESOURCES -5
#define CL_OUT_OF_HOST_MEMORY -6
#define CL_BUILD_PROGRAM_FAILURE -11
#define CL_PLATFORM_NOT_FOUND_KHR -1001

// The entry points, in one table (opencl.c: g_cl), each loaded by name.
#define HAL_CL_FUNCTIONS(X)                                                                                          \
  X(cl_int, clGetPlatformIDs, (cl_uint, cl_platform_id*, cl_uint*))                                                  \
  X(cl_int, clGetPlatformInfo, (cl_platform_id, cl_platform_info, size_t, void*, size_t*))                           \
  X(cl_int, clGetDeviceIDs, (cl_platform_id, cl_device_type, cl_uint, cl_device_id*, cl_uint*))                      \
  X(cl_int, clGetDeviceInfo, (cl_device_id, cl_device_info, size_t, void*, size_t*))                                 \
  X(cl_context, clCreateContext,                                                                                     \
    (const cl_context_properties*, cl_uint, const cl_device_id*,                                                     \
     void (*)(const char*, const void*, size_t, void*), void*, cl_int*))                                             \
  X(cl_int, clReleaseContext, (cl_context))                                                                          \
  X(cl_command_queue, clCreateCommandQueue, (cl_context, cl_device_id, cl_command_queue_properties, cl_int*))        \
  X(cl_int, clReleaseCommandQueue, (cl_command_queue))                                                               \
  X(cl_int, clFinish, (cl_command_queue))                                                                            \
  X(cl_int, clFlush, (cl_command_queue))                                                                             \
  X(cl_mem, clCreateBuffer, (cl_context, cl_mem_flags, size_t, void*, cl_int*))                                      \
  X(cl_int, clReleaseMemObject, (cl_mem))                                                                            \
  X(cl_int, clRetainMemObject, (cl_mem))                                                                             \
  X(cl_int, clEnqueueReadBuffer,                                                                                     \
    (cl_command_queue, cl_mem, cl_bool, size_t, size_t, void*, cl_uint, const cl_event*, cl_event*))                 \
  X(cl_int, clEnqueueWriteBuffer,                                                                                    \
    (cl_command_queue, cl_mem, cl_bool, size_t, size_t, const void*, cl_uint, const cl_event*, cl_event*))           \
  X(cl_int, clEnqueueCopyBuffer,                                                                                     \
    (cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t, cl_uint, const cl_event*, cl_event*))                 \
  X(cl_int, clEnqueueFillBuffer,                                                                                     \
    (cl_command_queue, cl_mem, const void*, size_t, size_t, size_t, cl_uint, const cl_event*, cl_event*))            \
  X(cl_int, clEnqueueMarkerWithWaitList, (cl_command_queue, cl_uint, const cl_event*, cl_event*))                    \
  X(cl_int, clEnqueueBarrierWithWaitList, (cl_command_queue, cl_uint, const cl_event*, cl_event*))                   \
  X(cl_int, clWaitForEvents, (cl_uint, const cl_event*))                                                             \
  X(cl_int, clGetEventInfo, (cl_event, cl_event_info, size_t, void*, size_t*))                                       \
  X(cl_int, clGetEventProfilingInfo, (cl_event, cl_profiling_info, size_t, void*, size_t*))                          \
  X(cl_int, clRetainEvent, (cl_event))                                                                               \
  X(cl_int, clReleaseEvent, (cl_event))                                                                              \
  X(cl_event, clCreateUserEvent, (cl_context, cl_int*))                                                              \
  X(cl_int, clSetUserEventStatus, (cl_event, cl_int))                                                                \
  X(cl_int, clSetEventCallback, (cl_event, cl_int, void (*)(cl_event, cl_int, void*), void*))                        \
  X(cl_program, clCreateProgramWithSource, (cl_context, cl_uint, const char**, const size_t*, cl_int*))              \
  X(cl_int, clBuildProgram,                                                                                          \
    (cl_program, cl_uint, const cl_device_id*, const char*, void (*)(cl_program, void*), void*))                     \
  X(cl_int, clGetProgramBuildInfo, (cl_program, cl_device_id, cl_program_build_info, size_t, void*, size_t*))        \
  X(cl_int, clReleaseProgram, (cl_program))                                                                          \
  X(cl_kernel, clCreateKernel, (cl_program, const char*, cl_int*))                                                   \
  X(cl_int, clReleaseKernel, (cl_kernel))                                                                            \
  X(cl_int, clSetKernelArg, (cl_kernel, cl_uint, size_t, const void*))                                               \
  X(cl_int, clGetKernelInfo, (cl_kernel, cl_kernel_info, size_t, void*, size_t*))                                    \
  X(cl_int, clGetKernelArgInfo, (cl_kernel, cl_uint, cl_kernel_arg_info, size_t, void*, size_t*))                    \
  X(cl_int, clEnqueueNDRangeKernel,                                                                                  \
    (cl_command_queue, cl_kernel, cl_uint, const size_t*, const size_t*, const size_t*, cl_uint, const cl_event*,    \
     cl_event*))

// Optional (OpenCL 2.1): NULL where the library lacks it.
#define HAL_CL_OPTIONAL_FUNCTIONS(X) \
  X(cl_program, clCreateProgramWithIL, (cl_context, const void*, size_t, cl_int*))

#define HAL_CL_MEMBER(ret, name, args) ret(*name) args;
typedef struct hal_cl_api_t {
  HAL_CL_FUNCTIONS(HAL_CL_MEMBER)
  HAL_CL_OPTIONAL_FUNCTIONS(HAL_CL_MEMBER)
} hal_cl_api_t;
#undef HAL_CL_MEMBER

#endif  // HAL_OPENCL_CL_API_H_
