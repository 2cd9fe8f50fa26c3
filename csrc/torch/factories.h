// Factories and views of the `hal` backend: the native kernels that create hal tensors (empty, empty_strided)
// and change their geometry without touching data (as_strided, view, _reshape_alias, resize_, set_).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace hal::bridge {

// A new hal tensor on |index| with |size| and |stride| (contiguous when |stride| is empty).
at::Tensor empty_on(c10::DeviceIndex index, c10::IntArrayRef size, c10::IntArrayRef stride, c10::ScalarType dtype);
// A view over |base|'s storage with |like|'s dtype, sizes, strides, storage offset and conjugate / negative
// bits (|like| is a tensor over the same memory, e.g. the CPU alias a kernel returned).
at::Tensor view_like(const at::Tensor& base, const at::Tensor& like);
// Sets sizes and strides (contiguous when |stride| is empty) and grows the storage when it is too small.
void restride(const at::Tensor& self, c10::IntArrayRef size, at::OptionalIntArrayRef stride);

}  // namespace hal::bridge
