// Optimizer steps: aten::_fused_adamw_, what torch.optim.AdamW(fused=True) calls once per step for all the
// parameters of a device (kernels/optim.cl): one launch per parameter tensor instead of the dozen elementwise
// launches per parameter of the for-loop and foreach implementations.
#include <stdlib.h>
#include <string.h>

#include "ops.h"

enum { PARAMS, GRADS, EXP_AVGS, EXP_AVG_SQS, MAX_EXP_AVG_SQS, STEPS, LISTS };
enum { LR = LISTS, BETA1, BETA2, WEIGHT_DECAY, EPS, AMSGRAD, MAXIMIZE, GRAD_SCALE, FOUND_INF, NUM_ARGS };

// An optional scalar f32 tensor (grad_scale, found_inf): no buffer when absent.
static hal_status_t optional_scalar(int32_t device, const hal_value_t* v, const char* what, operand_t* out) {
  memset(out, 0, sizeof(*out));
  if (v->kind == HAL_VALUE_NONE) return HAL_STATUS_OK;
  if (v->kind != HAL_VALUE_TENSOR || numel(&v->u.tensor) != 1) return DECLINE("%s other than one f32 element", what);
  return tensor_operand(device, &v->u.tensor, out);
}

hal_status_t run_fused_adamw(hal_stream_t stream, cl_command_queue q, int32_t device, const op_t* op,
                             const hal_value_t* args, uint64_t num_args) {
  if (num_args != NUM_ARGS) return DECLINE("_fused_adamw_ with %llu arguments", (unsigned long long)num_args);
  for (int l = 0; l < LISTS; l++) {
    if (args[l].kind != HAL_VALUE_TENSOR_LIST) return DECLINE("_fused_adamw_ argument %d is not a tensor list", l);
  }
  const uint64_t n = args[PARAMS].u.tensors.size;
  const int amsgrad = args[AMSGRAD].u.i != 0;
  for (int l = GRADS; l < LISTS; l++) {
    const uint64_t size = args[l].u.tensors.size;
    if (size != n && !(l == MAX_EXP_AVG_SQS && !amsgrad && size == 0)) return DECLINE("_fused_adamw_ lists of unequal lengths");
  }
  operand_t scale, inf;
  hal_status_t status = optional_scalar(device, &args[GRAD_SCALE], "grad_scale", &scale);
  if (status == HAL_STATUS_OK) status = optional_scalar(device, &args[FOUND_INF], "found_inf", &inf);
  if (status != HAL_STATUS_OK) return status;
  // Every tensor is resolved (and any call the kernel does not cover declined) before anything is queued.
  operand_t* o = calloc(n ? n * LISTS : 1, sizeof(*o));
  if (o == NULL) return ocl_fail(HAL_STATUS_OUT_OF_MEMORY, "opencl: out of host memory");
  for (uint64_t k = 0; k < n && status == HAL_STATUS_OK; k++) {
    const hal_tensor_t* param = &args[PARAMS].u.tensors.data[k];
    for (int l = 0; l < LISTS && status == HAL_STATUS_OK; l++) {
      if (l == MAX_EXP_AVG_SQS && !amsgrad) continue;
      const hal_tensor_t* t = &args[l].u.tensors.data[k];
      if (t->ndim < 0) status = DECLINE("_fused_adamw_ with an absent tensor");
      else if (l == STEPS ? numel(t) != 1 : !(contiguous_as(t, param) && contiguous_as(param, param))) {
        status = DECLINE("_fused_adamw_: %s", l == STEPS ? "a step count of other than one element" : "non-contiguous tensors");
      } else {
        status = tensor_operand(device, t, &o[k * LISTS + l]);
      }
    }
  }
  ocl_ops_t* ops = NULL;
  if (status == HAL_STATUS_OK) status = device_ops(device, &ops);
  float lr = (float)args[LR].u.f, beta1 = (float)args[BETA1].u.f, beta2 = (float)args[BETA2].u.f;
  float weight_decay = (float)args[WEIGHT_DECAY].u.f, eps = (float)args[EPS].u.f;
  cl_int ams = amsgrad, maximize = args[MAXIMIZE].u.i != 0;
  for (uint64_t k = 0; k < n && status == HAL_STATUS_OK; k++) {
    const cl_long count = numel(&args[PARAMS].u.tensors.data[k]);
    if (count == 0) continue;
    operand_t* t = &o[k * LISTS];
    for (int l = 0; l < LISTS; l++) {  // Contiguous: each tensor's element offset goes into its byte offset.
      if (t[l].t != NULL) t[l].byte_offset += (cl_ulong)t[l].t->offset * 4;
    }
    operand_t s = scale, f = inf;
    if (s.t) s.byte_offset += (cl_ulong)s.t->offset * 4;
    if (f.t) f.byte_offset += (cl_ulong)f.t->offset * 4;
    pthread_mutex_lock(&ops->launch);
    args_t a = {ops->kernels[KN_ADAMW], 0, CL_SUCCESS};
    for (int l = 0; l < LISTS; l++) buffer_arg(&a, l == MAX_EXP_AVG_SQS && !amsgrad ? &t[EXP_AVG_SQS] : &t[l]);
    buffer_arg(&a, &s);
    buffer_arg(&a, &f);
    arg(&a, sizeof(count), &count);
    arg(&a, sizeof(lr), &lr);
    arg(&a, sizeof(beta1), &beta1);
    arg(&a, sizeof(beta2), &beta2);
    arg(&a, sizeof(weight_decay), &weight_decay);
    arg(&a, sizeof(eps), &eps);
    arg(&a, sizeof(ams), &ams);
    arg(&a, sizeof(maximize), &maximize);
    const size_t global = (size_t)((count + ops->chunk - 1) / ops->chunk);
    status = enqueue(stream, q, ops, &a, 1, &global, NULL, op->decl.name);
  }
  free(o);
  return status == HAL_STATUS_OK ? ocl_ok() : status;
}
