// Generators of the `hal` backend: one default generator per device, and torch.Generator(device="hal:N").
// A hal generator's state lives in a CPU generator; the fallback hands that CPU generator to CPU kernels, so
// the device's random stream advances exactly as a CPU generator with the same seed would.
#pragma once

#include <ATen/core/Generator.h>
#include <c10/core/Device.h>

namespace hal::bridge {

const at::Generator& default_generator(c10::DeviceIndex index);
at::Generator new_generator(c10::DeviceIndex index);
// The CPU generator that carries a hal generator's state.
at::Generator cpu_generator_of(const at::Generator& hal_generator);

}  // namespace hal::bridge
