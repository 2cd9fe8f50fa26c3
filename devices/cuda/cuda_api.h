// The part of the CUDA driver API (and of cuBLAS and NCCL) the cuda plugin uses, declared here so that the plugin
// builds without CUDA headers and loads libcuda.so.1 (libcublas, libnccl) at run time: types, constants and
// function types as the CUDA driver API documents them (cuda.h of CUDA 11/12; cublas_api.h; nccl.h), and the
// tables of entry points cuda.c, cuda_ops.c and cuda_collectives.c fill with dlsym.
//
// Each table row is X(return type, member, exported symbol, parameter types). The member is the API's
// documented name; the symbol is what the library exports for it: cuda.h maps many names to a _v2 symbol
// (#define cuMemAlloc cuMemAlloc_v2) whose ABI differs from the original one (size_t instead of unsigned int),
// so the _v2 symbol is the one to load.
#ifndef HAL_CUDA_CUDA_API_H_
#define HAL_CUDA_CUDA_API_H_

#include <stddef.h>
#include <stdint.h>

// --- CUDA driver API ----------------------------------------------------------------------------------------

typedef int CUresult;  // An enum in cuda.h (int-sized); 0 is CUDA_SUCCESS.
typedef int CUdevice;
typedef int CUdevice_attribute;
typedef int CUjit_option;
typedef int CUfunction_attribute;
typedef unsigned long long CUdeviceptr;  // CUdeviceptr_v2: 64 bits on every 64-bit platform.
typedef struct CUctx_st* CUcontext;
typedef struct CUstream_st* CUstream;
typedef struct CUevent_st* CUevent;
typedef struct CUmod_st* CUmodule;
typedef struct CUfunc_st* CUfunction;
typedef void (*CUhostFn)(void* user_data);

// CUresult values the plugin tells apart (cuda.h).
#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_DEINITIALIZED 4
#define CUDA_ERROR_STUB_LIBRARY 34
#define CUDA_ERROR_INSUFFICIENT_DRIVER 35
#define CUDA_ERROR_NO_DEVICE 100
#define CUDA_ERROR_INVALID_DEVICE 101
#define CUDA_ERROR_INVALID_IMAGE 200
#define CUDA_ERROR_INVALID_CONTEXT 201
#define CUDA_ERROR_NO_BINARY_FOR_GPU 209
#define CUDA_ERROR_INVALID_PTX 218
#define CUDA_ERROR_INVALID_HANDLE 400
#define CUDA_ERROR_NOT_FOUND 500
#define CUDA_ERROR_NOT_READY 600
#define CUDA_ERROR_ILLEGAL_ADDRESS 700
#define CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES 701
#define CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED 704
#define CUDA_ERROR_LAUNCH_FAILED 719

// CUdevice_attribute values (cuda.h).
#define CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK 1
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X 5
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y 6
#define CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z 7
#define CU_DEVICE_ATTRIBUTE_CLOCK_RATE 13  // kHz
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE 36      // kHz
#define CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH 37  // bits
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76

#define CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK 0

#define CU_MEMHOSTALLOC_PORTABLE 0x01
#define CU_STREAM_NON_BLOCKING 0x1
#define CU_EVENT_DEFAULT 0x0
#define CU_EVENT_DISABLE_TIMING 0x2

// CUjit_option values (cuda.h): the JIT's logs for program_create's messages.
#define CU_JIT_INFO_LOG_BUFFER 3
#define CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES 4
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6

#define HAL_CUDA_FUNCTIONS(X)                                                                                    \
  X(CUresult, cuInit, cuInit, (unsigned int))                                                                  \
  X(CUresult, cuDriverGetVersion, cuDriverGetVersion, (int*))                                                  \
  X(CUresult, cuGetErrorName, cuGetErrorName, (CUresult, const char**))                                        \
  X(CUresult, cuGetErrorString, cuGetErrorString, (CUresult, const char**))                                    \
  X(CUresult, cuDeviceGetCount, cuDeviceGetCount, (int*))                                                      \
  X(CUresult, cuDeviceGet, cuDeviceGet, (CUdevice*, int))                                                      \
  X(CUresult, cuDeviceGetName, cuDeviceGetName, (char*, int, CUdevice))                                        \
  X(CUresult, cuDeviceTotalMem, cuDeviceTotalMem_v2, (size_t*, CUdevice))                                      \
  X(CUresult, cuDeviceGetAttribute, cuDeviceGetAttribute, (int*, CUdevice_attribute, CUdevice))                \
  X(CUresult, cuDeviceCanAccessPeer, cuDeviceCanAccessPeer, (int*, CUdevice, CUdevice))                        \
  X(CUresult, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, (CUcontext*, CUdevice))                      \
  X(CUresult, cuCtxSetCurrent, cuCtxSetCurrent, (CUcontext))                                                   \
  X(CUresult, cuCtxSynchronize, cuCtxSynchronize, (void))                                                      \
  X(CUresult, cuCtxEnablePeerAccess, cuCtxEnablePeerAccess, (CUcontext, unsigned int))                         \
  X(CUresult, cuMemAlloc, cuMemAlloc_v2, (CUdeviceptr*, size_t))                                               \
  X(CUresult, cuMemFree, cuMemFree_v2, (CUdeviceptr))                                                          \
  X(CUresult, cuMemGetInfo, cuMemGetInfo_v2, (size_t*, size_t*))                                               \
  X(CUresult, cuMemHostAlloc, cuMemHostAlloc, (void**, size_t, unsigned int))                                  \
  X(CUresult, cuMemFreeHost, cuMemFreeHost, (void*))                                                           \
  X(CUresult, cuMemcpyHtoDAsync, cuMemcpyHtoDAsync_v2, (CUdeviceptr, const void*, size_t, CUstream))           \
  X(CUresult, cuMemcpyDtoHAsync, cuMemcpyDtoHAsync_v2, (void*, CUdeviceptr, size_t, CUstream))                 \
  X(CUresult, cuMemcpyDtoDAsync, cuMemcpyDtoDAsync_v2, (CUdeviceptr, CUdeviceptr, size_t, CUstream))           \
  X(CUresult, cuMemcpyPeerAsync, cuMemcpyPeerAsync,                                                            \
    (CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream))                                          \
  X(CUresult, cuMemsetD8Async, cuMemsetD8Async, (CUdeviceptr, unsigned char, size_t, CUstream))                \
  X(CUresult, cuStreamCreate, cuStreamCreate, (CUstream*, unsigned int))                                       \
  X(CUresult, cuStreamDestroy, cuStreamDestroy_v2, (CUstream))                                                 \
  X(CUresult, cuStreamSynchronize, cuStreamSynchronize, (CUstream))                                            \
  X(CUresult, cuStreamQuery, cuStreamQuery, (CUstream))                                                        \
  X(CUresult, cuStreamWaitEvent, cuStreamWaitEvent, (CUstream, CUevent, unsigned int))                         \
  X(CUresult, cuLaunchHostFunc, cuLaunchHostFunc, (CUstream, CUhostFn, void*))                                 \
  X(CUresult, cuEventCreate, cuEventCreate, (CUevent*, unsigned int))                                          \
  X(CUresult, cuEventDestroy, cuEventDestroy_v2, (CUevent))                                                    \
  X(CUresult, cuEventRecord, cuEventRecord, (CUevent, CUstream))                                               \
  X(CUresult, cuEventSynchronize, cuEventSynchronize, (CUevent))                                               \
  X(CUresult, cuEventQuery, cuEventQuery, (CUevent))                                                           \
  X(CUresult, cuEventElapsedTime, cuEventElapsedTime, (float*, CUevent, CUevent))                              \
  X(CUresult, cuModuleLoadDataEx, cuModuleLoadDataEx,                                                          \
    (CUmodule*, const void*, unsigned int, CUjit_option*, void**))                                               \
  X(CUresult, cuModuleUnload, cuModuleUnload, (CUmodule))                                                      \
  X(CUresult, cuModuleGetFunction, cuModuleGetFunction, (CUfunction*, CUmodule, const char*))                  \
  X(CUresult, cuFuncGetAttribute, cuFuncGetAttribute, (int*, CUfunction_attribute, CUfunction))                \
  X(CUresult, cuLaunchKernel, cuLaunchKernel,                                                                  \
    (CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,             \
     unsigned int, CUstream, void**, void**))

// Optional: NULL where the driver lacks it. cuDevicePrimaryCtxRelease_v2 is CUDA 11's name of the release
// (cuDevicePrimaryCtxRelease before); cuFuncGetParamInfo (CUDA 12.4) lets kernel_launch check its arguments.
#define HAL_CUDA_OPTIONAL_FUNCTIONS(X)                                                                           \
  X(CUresult, cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, (CUdevice))                             \
  X(CUresult, cuDevicePrimaryCtxReleaseV1, cuDevicePrimaryCtxRelease, (CUdevice))                              \
  X(CUresult, cuFuncGetParamInfo, cuFuncGetParamInfo, (CUfunction, size_t, size_t*, size_t*))

#define HAL_CUDA_MEMBER(ret, member, symbol, args) ret(*member) args;
typedef struct hal_cuda_api_t {
  HAL_CUDA_FUNCTIONS(HAL_CUDA_MEMBER)
  HAL_CUDA_OPTIONAL_FUNCTIONS(HAL_CUDA_MEMBER)
} hal_cuda_api_t;

// --- cuBLAS (cublas_api.h) ----------------------------------------------------------------------------------

typedef int cublasStatus_t;  // 0 is CUBLAS_STATUS_SUCCESS.
typedef int cublasOperation_t;
typedef struct cublasContext* cublasHandle_t;
#define CUBLAS_STATUS_SUCCESS 0
#define CUBLAS_OP_N 0
#define CUBLAS_OP_T 1

#define HAL_CUBLAS_FUNCTIONS(X)                                                                                  \
  X(cublasStatus_t, cublasCreate, cublasCreate_v2, (cublasHandle_t*))                                          \
  X(cublasStatus_t, cublasDestroy, cublasDestroy_v2, (cublasHandle_t))                                         \
  X(cublasStatus_t, cublasSetStream, cublasSetStream_v2, (cublasHandle_t, CUstream))                           \
  X(cublasStatus_t, cublasSgemm, cublasSgemm_v2,                                                               \
    (cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float*, const float*, int,       \
     const float*, int, const float*, float*, int))                                                              \
  X(cublasStatus_t, cublasSgemmStridedBatched, cublasSgemmStridedBatched,                                      \
    (cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float*, const float*, int,       \
     long long, const float*, int, long long, const float*, float*, int, long long, int))

typedef struct hal_cublas_api_t {
  HAL_CUBLAS_FUNCTIONS(HAL_CUDA_MEMBER)
} hal_cublas_api_t;

// --- NCCL (nccl.h) ------------------------------------------------------------------------------------------

typedef int ncclResult_t;  // 0 is ncclSuccess.
typedef int ncclDataType_t;
typedef int ncclRedOp_t;
typedef struct ncclComm* ncclComm_t;
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct ncclUniqueId {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

#define ncclSuccess 0
#define ncclInvalidArgument 4
#define ncclInvalidUsage 5
#define ncclInProgress 7

// ncclDataType_t
#define ncclInt8 0
#define ncclUint8 1
#define ncclInt32 2
#define ncclUint32 3
#define ncclInt64 4
#define ncclUint64 5
#define ncclFloat16 6
#define ncclFloat32 7
#define ncclFloat64 8
#define ncclBfloat16 9
// ncclRedOp_t (note: Max before Min, unlike hal_reduce_op_e)
#define ncclSum 0
#define ncclProd 1
#define ncclMax 2
#define ncclMin 3
#define ncclAvg 4  // NCCL 2.10 and later.

#define HAL_NCCL_FUNCTIONS(X)                                                                                    \
  X(ncclResult_t, ncclGetVersion, ncclGetVersion, (int*))                                                      \
  X(const char*, ncclGetErrorString, ncclGetErrorString, (ncclResult_t))                                       \
  X(ncclResult_t, ncclGetUniqueId, ncclGetUniqueId, (ncclUniqueId*))                                           \
  X(ncclResult_t, ncclCommInitRank, ncclCommInitRank, (ncclComm_t*, int, ncclUniqueId, int))                   \
  X(ncclResult_t, ncclCommDestroy, ncclCommDestroy, (ncclComm_t))                                              \
  X(ncclResult_t, ncclCommAbort, ncclCommAbort, (ncclComm_t))                                                  \
  X(ncclResult_t, ncclCommGetAsyncError, ncclCommGetAsyncError, (ncclComm_t, ncclResult_t*))                   \
  X(ncclResult_t, ncclAllReduce, ncclAllReduce,                                                                \
    (const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, CUstream))                             \
  X(ncclResult_t, ncclAllGather, ncclAllGather, (const void*, void*, size_t, ncclDataType_t, ncclComm_t, CUstream)) \
  X(ncclResult_t, ncclReduceScatter, ncclReduceScatter,                                                        \
    (const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, CUstream))                             \
  X(ncclResult_t, ncclBroadcast, ncclBroadcast,                                                                \
    (const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, CUstream))                                     \
  X(ncclResult_t, ncclSend, ncclSend, (const void*, size_t, ncclDataType_t, int, ncclComm_t, CUstream))        \
  X(ncclResult_t, ncclRecv, ncclRecv, (void*, size_t, ncclDataType_t, int, ncclComm_t, CUstream))

typedef struct hal_nccl_api_t {
  HAL_NCCL_FUNCTIONS(HAL_CUDA_MEMBER)
} hal_nccl_api_t;

#endif  // HAL_CUDA_CUDA_API_H_
