// Generators of the `hal` backend (generator.h).
#include "generator.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>
#include <utility>
#include <vector>

#include "runtime_access.h"

namespace hal::bridge {
namespace {

class GeneratorImpl final : public c10::GeneratorImpl {
 public:
  GeneratorImpl(c10::DeviceIndex index, at::Generator cpu)
      : c10::GeneratorImpl(c10::Device(kHal, index), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1)),
        cpu_(std::move(cpu)) {}

  const at::Generator& cpu() const { return cpu_; }

  void set_current_seed(uint64_t seed) override { impl()->set_current_seed(seed); }
  void set_offset(uint64_t offset) override { impl()->set_offset(offset); }
  uint64_t get_offset() const override { return impl()->get_offset(); }
  uint64_t current_seed() const override { return impl()->current_seed(); }
  uint64_t seed() override { return impl()->seed(); }
  void set_state(const c10::TensorImpl& state) override { impl()->set_state(state); }
  c10::intrusive_ptr<c10::TensorImpl> get_state() const override { return impl()->get_state(); }

 private:
  c10::GeneratorImpl* impl() const { return cpu_.unsafeGetGeneratorImpl(); }
  GeneratorImpl* clone_impl() const override { return new GeneratorImpl(device_.index(), cpu_.clone()); }

  at::Generator cpu_;
};

std::once_flag g_generators_once;
std::vector<at::Generator> g_default_generators;

}  // namespace

const at::Generator& default_generator(c10::DeviceIndex index) {
  const int count = device_count();
  std::call_once(g_generators_once, [&] {
    g_default_generators.reserve(count);
    for (int i = 0; i < count; ++i) {
      g_default_generators.push_back(at::make_generator<GeneratorImpl>(
          static_cast<c10::DeviceIndex>(i),
          at::make_generator<at::CPUGeneratorImpl>(c10::detail::getNonDeterministicRandom())));
    }
  });
  if (index < 0) index = current_device();
  TORCH_CHECK(index < static_cast<int>(g_default_generators.size()), "hal: invalid device index ", int(index),
              " for a generator (", g_default_generators.size(), " devices)");
  return g_default_generators[index];
}

at::Generator new_generator(c10::DeviceIndex index) {
  if (index < 0) index = current_device();
  device(index);  // Validates.
  return at::make_generator<GeneratorImpl>(index, at::make_generator<at::CPUGeneratorImpl>());
}

at::Generator cpu_generator_of(const at::Generator& gen) {
  TORCH_CHECK(gen.device().type() == kHal, "hal: expected a hal generator, got one for ", gen.device());
  return static_cast<GeneratorImpl*>(gen.unsafeGetGeneratorImpl())->cpu();
}

}  // namespace hal::bridge
