// The cuda plugin's internals shared by its files: cuda.c (loading, devices, memory, streams, events, copies,
// host functions, programs), cuda_ops.c (the operators, through cuBLAS) and cuda_collectives.c (NCCL).
#ifndef HAL_CUDA_CUDA_PLUGIN_H_
#define HAL_CUDA_CUDA_PLUGIN_H_

#include <pthread.h>
#include <stdint.h>

#include "cuda_api.h"
#include "hal/hal.h"

extern hal_cuda_api_t g_cu;  // The driver's entry points, loaded at initialize.

typedef struct cu_device_t {
  CUdevice dev;
  CUcontext ctx;  // The primary context, retained on first use (cu_bind); NULL before.
  char name[HAL_DEVICE_NAME_MAX];
  uint64_t capacity;
  int sm_count, clock_khz, cc_major, cc_minor, max_threads;
  double memory_bandwidth, peak_f32;
  pthread_mutex_t mutex;  // Guards ctx's retain and the cuBLAS handle (cuda_ops.c).
  cublasHandle_t blas;    // Created on first use by cuda_ops.c, under |mutex|.
} cu_device_t;

extern cu_device_t* g_devices;
extern int32_t g_device_count;

// The error model: every entry returns through these (thread-local message and native code).
hal_status_t cu_ok(void);
__attribute__((format(printf, 2, 3))) hal_status_t cu_fail(hal_status_t status, const char* format, ...);
// The one translation of a CUresult: the status (out of memory -> OUT_OF_MEMORY, invalid value / handle / not
// found -> INVALID_ARGUMENT, not ready -> NOT_READY, others DEVICE_ERROR), the message
// "cuda: <call>: <CUDA_ERROR_NAME> (<code>): <string>[; <detail>]", the native code |r|.
__attribute__((format(printf, 3, 4))) hal_status_t cu_error(CUresult r, const char* call, const char* detail_format, ...);
// Just the status cu_error would give.
hal_status_t cu_status_of(CUresult r);
// Sets the native code of the calling thread's last error (after cu_fail, for a vendor library's own code).
void cu_set_native(int32_t code);
const char* cu_error_name(CUresult r);

hal_status_t cu_check_device(int32_t device);
// Makes |device|'s primary context current on the calling thread (retaining it the first time). Contexts are
// per thread: every entry that calls the driver on behalf of a device binds first.
hal_status_t cu_bind(int32_t device);

// Streams (cuda.c). cu_stream_get checks |stream| and gives its CUstream and device.
hal_status_t cu_stream_get(hal_stream_t stream, CUstream* out_stream, int32_t* out_device);
// Makes the next synchronize (or idle query) of |stream| fail with |status| and |message| (the sticky-error rule
// of stream.h) for failures the driver does not see: a collective that timed out or was aborted. The first
// one set wins until it is reported.
void cu_stream_set_fault(hal_stream_t stream, hal_status_t status, const char* message);

// Operators (cuda_ops.c): cuBLAS loaded on first use of op_list / op_launch.
hal_status_t cu_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count);
hal_status_t cu_op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                          const hal_tensor_t* results, uint64_t num_results);
void cu_ops_release(cu_device_t* device);

// Collectives (cuda_collectives.c). cu_nccl_probe, called by hal_plugin_get_api, says whether NCCL can be loaded
// (dlopen only: no device is touched); the table has the collective entries only when it can.
int cu_nccl_probe(void);
void cu_collectives_fill(hal_plugin_api_t* api);
void cu_collectives_shutdown(void);

#endif  // HAL_CUDA_CUDA_PLUGIN_H_
