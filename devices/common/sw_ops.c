// Operators of the software stream engine (sw_stream.h, kernel.h): the plugin lists sw_operator_t's; the engine
// serves op_list from them, and op_launch checks a call, copies it whole (descriptors, sizes, strides, lists,
// strings: kernel.h says they are valid only during the call) into one block, and queues it. On the worker the
// block's tensors are resolved to host pointers and the operator's kernel runs, paced like the device's other
// work. The block is freed once the work ran or was skipped.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sw_stream.h"

#define FAIL(status, format, ...) sw_plugin.fail((status), "%s: " format, sw_plugin.name, ##__VA_ARGS__)

// --- op_list ------------------------------------------------------------------------------------------------

static hal_op_t* g_decls;
static uint64_t g_count;
static pthread_once_t g_decls_once = PTHREAD_ONCE_INIT;

static void build_decls(void) {
  while (sw_plugin.operators != NULL && sw_plugin.operators[g_count].decl.name != NULL) g_count++;
  g_decls = calloc(g_count ? g_count : 1, sizeof(hal_op_t));
  for (uint64_t i = 0; g_decls != NULL && i < g_count; i++) g_decls[i] = sw_plugin.operators[i].decl;
}

hal_status_t sw_op_list(int32_t device, const hal_op_t** out_ops, uint64_t* out_count) {
  hal_status_t status = sw_plugin.check_device(device);
  if (status != HAL_STATUS_OK) return status;
  if (out_ops == NULL || out_count == NULL) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "op_list: NULL output");
  pthread_once(&g_decls_once, build_decls);
  if (g_decls == NULL) return FAIL(HAL_STATUS_OUT_OF_MEMORY, "op_list: out of host memory");
  *out_ops = g_decls;
  *out_count = g_count;
  return sw_plugin.ok();
}

// --- Checking a call ----------------------------------------------------------------------------------------

// Bytes of storage |t| touches from its data pointer (0 for no elements); 0 also when it is malformed (*bad).
static uint64_t span_bytes(const hal_tensor_t* t, int* bad) {
  size_t es = hal_dtype_size(t->dtype);
  if (es == 0 || t->ndim < 0 || t->ndim > 64 || t->offset < 0 || (t->ndim > 0 && (!t->sizes || !t->strides))) {
    *bad = 1;
    return 0;
  }
  uint64_t last = (uint64_t)t->offset;
  for (int32_t d = 0; d < t->ndim; d++) {
    if (t->sizes[d] < 0 || t->strides[d] < 0) {
      *bad = 1;
      return 0;
    }
    if (t->sizes[d] == 0) return 0;
    last += (uint64_t)(t->sizes[d] - 1) * (uint64_t)t->strides[d];
  }
  return (last + 1) * es;
}

static hal_status_t check_tensor(int32_t device, const hal_tensor_t* t, const char* what, uint64_t index) {
  int bad = 0;
  uint64_t bytes = span_bytes(t, &bad);
  if (bad) return FAIL(HAL_STATUS_INVALID_ARGUMENT, "op_launch: %s %llu is a malformed tensor", what,
                       (unsigned long long)index);
  void* unused;
  return bytes == 0 ? HAL_STATUS_OK : sw_plugin.resolve(device, t->data, bytes, &unused);
}

static hal_status_t check_call(const sw_call_t* call) {
  for (uint64_t i = 0; i < call->num_args; i++) {
    const hal_value_t* v = &call->args[i];
    hal_status_t status = HAL_STATUS_OK;
    if (v->kind == HAL_VALUE_TENSOR) status = check_tensor(call->device, &v->u.tensor, "argument", i);
    if (v->kind == HAL_VALUE_TENSOR_LIST) {
      for (uint64_t j = 0; j < v->u.tensors.size && status == HAL_STATUS_OK; j++) {
        if (v->u.tensors.data[j].ndim >= 0) status = check_tensor(call->device, &v->u.tensors.data[j], "argument", i);
      }
    }
    if (v->kind < HAL_VALUE_NONE || v->kind > HAL_VALUE_DTYPE) {
      status = FAIL(HAL_STATUS_INVALID_ARGUMENT, "op_launch: argument %llu has unknown kind %d",
                    (unsigned long long)i, (int)v->kind);
    }
    if (status != HAL_STATUS_OK) return status;
  }
  for (uint64_t i = 0; i < call->num_results; i++) {
    hal_status_t status = check_tensor(call->device, &call->results[i], "result", i);
    if (status != HAL_STATUS_OK) return status;
  }
  return HAL_STATUS_OK;
}

// --- Copying a call whole -------------------------------------------------------------------------------------

// A bump allocator over one malloc'ed block: first sized (base NULL), then filled.
typedef struct arena_t {
  char* base;
  size_t used;
} arena_t;

static void* take(arena_t* a, size_t size) {
  size = (size + 15) & ~(size_t)15;
  void* p = a->base ? a->base + a->used : NULL;
  a->used += size;
  return p;
}

static void copy_tensor(arena_t* a, hal_tensor_t* dst, const hal_tensor_t* src) {
  *dst = *src;
  size_t n = src->ndim > 0 ? (size_t)src->ndim * sizeof(int64_t) : 0;
  int64_t* sizes = take(a, n);
  int64_t* strides = take(a, n);
  if (a->base && n) {
    memcpy(sizes, src->sizes, n);
    memcpy(strides, src->strides, n);
  }
  if (a->base) {
    dst->sizes = sizes;
    dst->strides = strides;
  }
}

// Lays out (a->base NULL: only measures) the call in the arena; returns the copy's sw_call_t.
static sw_call_t* copy_call(arena_t* a, const sw_call_t* call) {
  sw_call_t* out = take(a, sizeof(sw_call_t));
  hal_value_t* args = take(a, call->num_args * sizeof(hal_value_t));
  hal_tensor_t* results = take(a, call->num_results * sizeof(hal_tensor_t));
  hal_value_t scratch_value;
  hal_tensor_t scratch_tensor;
  for (uint64_t i = 0; i < call->num_args; i++) {
    const hal_value_t* v = &call->args[i];
    hal_value_t* d = a->base ? &args[i] : &scratch_value;
    *d = *v;
    switch (v->kind) {
      case HAL_VALUE_TENSOR: copy_tensor(a, &d->u.tensor, &v->u.tensor); break;
      case HAL_VALUE_INT_LIST: {
        int64_t* p = take(a, v->u.ints.size * sizeof(int64_t));
        if (a->base) {
          if (v->u.ints.size) memcpy(p, v->u.ints.data, v->u.ints.size * sizeof(int64_t));
          d->u.ints.data = p;
        }
        break;
      }
      case HAL_VALUE_FLOAT_LIST: {
        double* p = take(a, v->u.floats.size * sizeof(double));
        if (a->base) {
          if (v->u.floats.size) memcpy(p, v->u.floats.data, v->u.floats.size * sizeof(double));
          d->u.floats.data = p;
        }
        break;
      }
      case HAL_VALUE_TENSOR_LIST: {
        hal_tensor_t* p = take(a, v->u.tensors.size * sizeof(hal_tensor_t));
        for (uint64_t j = 0; j < v->u.tensors.size; j++) {
          copy_tensor(a, a->base ? &p[j] : &scratch_tensor, &v->u.tensors.data[j]);
        }
        if (a->base) d->u.tensors.data = p;
        break;
      }
      case HAL_VALUE_STRING: {
        size_t n = v->u.string ? strlen(v->u.string) + 1 : 1;
        char* p = take(a, n);
        if (a->base) {
          memcpy(p, v->u.string ? v->u.string : "", n);
          d->u.string = p;
        }
        break;
      }
      default: break;
    }
  }
  for (uint64_t i = 0; i < call->num_results; i++) {
    copy_tensor(a, a->base ? &results[i] : &scratch_tensor, &call->results[i]);
  }
  if (a->base) *out = (sw_call_t){call->device, args, call->num_args, results, call->num_results};
  return out;
}

// --- Running it on the worker -----------------------------------------------------------------------------------

typedef struct queued_op_t {
  const sw_operator_t* op;
  sw_call_t* call;  // In the block, which also holds the queued_op_t's owner pointer.
  void* block;
} queued_op_t;

static hal_status_t resolve_tensor(int32_t device, hal_tensor_t* t) {
  int bad = 0;
  uint64_t bytes = span_bytes(t, &bad);
  if (bytes == 0) return HAL_STATUS_OK;
  return sw_plugin.resolve(device, t->data, bytes, &t->data);
}

static hal_status_t run_op(hal_stream_t stream, const void* args) {
  const queued_op_t* q = args;
  sw_call_t* call = q->call;
  hal_value_t* values = (hal_value_t*)call->args;
  hal_status_t status = HAL_STATUS_OK;
  for (uint64_t i = 0; i < call->num_args && status == HAL_STATUS_OK; i++) {
    if (values[i].kind == HAL_VALUE_TENSOR) status = resolve_tensor(call->device, &values[i].u.tensor);
    if (values[i].kind == HAL_VALUE_TENSOR_LIST) {
      hal_tensor_t* list = (hal_tensor_t*)values[i].u.tensors.data;
      for (uint64_t j = 0; j < values[i].u.tensors.size && status == HAL_STATUS_OK; j++) {
        if (list[j].ndim >= 0) status = resolve_tensor(call->device, &list[j]);
      }
    }
  }
  hal_tensor_t* results = (hal_tensor_t*)call->results;
  for (uint64_t i = 0; i < call->num_results && status == HAL_STATUS_OK; i++) {
    status = resolve_tensor(call->device, &results[i]);
  }
  if (status != HAL_STATUS_OK) return status;
  const sw_pace_t pace = sw_pace_start(call->device);
  status = q->op->run(call);
  sw_pace_device(&pace);
  return status;
}

static void release_op(const void* args, int ran) {
  (void)ran;
  free(((const queued_op_t*)args)->block);
}

hal_status_t sw_op_launch(hal_stream_t stream, uint64_t op, const hal_value_t* args, uint64_t num_args,
                          const hal_tensor_t* results, uint64_t num_results) {
  hal_status_t status = sw_check_stream(stream);
  if (status != HAL_STATUS_OK) return status;
  pthread_once(&g_decls_once, build_decls);
  if (op >= g_count) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "op_launch: operator %llu out of range (%llu operators)",
                (unsigned long long)op, (unsigned long long)g_count);
  }
  if ((num_args && args == NULL) || (num_results && results == NULL)) {
    return FAIL(HAL_STATUS_INVALID_ARGUMENT, "op_launch: NULL arguments or results");
  }
  const sw_operator_t* impl = &sw_plugin.operators[op];
  const sw_call_t call = {sw_stream_device(stream), args, num_args, results, num_results};
  status = check_call(&call);
  if (status == HAL_STATUS_OK && impl->check != NULL) status = impl->check(&call);
  if (status != HAL_STATUS_OK) return status;

  arena_t arena = {NULL, 0};
  copy_call(&arena, &call);
  arena.base = malloc(arena.used);
  if (arena.base == NULL) return FAIL(HAL_STATUS_OUT_OF_MEMORY, "op_launch: out of host memory");
  arena.used = 0;
  const queued_op_t q = {impl, copy_call(&arena, &call), arena.base};
  status = sw_enqueue_holding(stream, impl->decl.name, run_op, release_op, &q, sizeof(q));
  if (status != HAL_STATUS_OK) free(arena.base);
  return status;
}
