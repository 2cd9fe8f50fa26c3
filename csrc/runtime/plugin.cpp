#include "runtime/plugin.h"

#include <dlfcn.h>
#include <elf.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <fstream>

#include "runtime/validation.h"

namespace hal {
namespace {

// Every function entry of hal_plugin_api_t, in table order: X(name, required).
#define HAL_PLUGIN_ENTRY_LIST(X)                                                                        \
  X(initialize, true) X(shutdown, true) X(get_last_error, true) X(device_count, true)                   \
  X(device_get_properties, true) X(device_get_memory_info, true) X(memory_allocate, true)               \
  X(memory_free, true) X(stream_create, true) X(stream_destroy, true) X(stream_synchronize, true)       \
  X(stream_query, true) X(stream_wait_event, true) X(event_create, true) X(event_destroy, true)          \
  X(event_record, true) X(event_synchronize, true) X(event_query, true) X(event_elapsed_time, true)     \
  X(memcpy_h2d_async, true) X(memcpy_d2h_async, true) X(memcpy_d2d_async, true)                         \
  X(host_allocate, false) X(host_free, false) X(memcpy_peer_async, false) X(memset_async, false)        \
  X(launch_host_func, false) X(memory_map, false) X(memory_unmap, false) X(comm_get_unique_id, false)   \
  X(comm_init_rank, false) X(comm_destroy, false) X(comm_abort, false) X(allreduce, false)              \
  X(allgather, false) X(reduce_scatter, false) X(broadcast, false) X(send, false) X(recv, false)   \
  X(op_list, false) X(op_launch, false) X(program_create, false) X(program_destroy, false)                \
  X(kernel_create, false) X(kernel_destroy, false) X(kernel_launch, false)

// Optional entries that only work together (kernel.h): a plugin has all of a group or none.
const std::vector<std::pair<const char*, std::vector<const char*>>>& entry_groups() {
  static const std::vector<std::pair<const char*, std::vector<const char*>>> groups = {
      {"operators", {"op_list", "op_launch"}},
      {"programs", {"program_create", "program_destroy", "kernel_create", "kernel_destroy", "kernel_launch"}},
  };
  return groups;
}

// The ABI 1.0 table must reach at least its last required entry.
constexpr size_t kMinStructSize = offsetof(hal_plugin_api_t, memcpy_d2d_async) + sizeof(void*);

std::string version_text(uint32_t major, uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

bool entry_present(const hal_plugin_api_t& api, const PluginEntry& entry) {
  void* fn = nullptr;
  std::memcpy(&fn, reinterpret_cast<const char*>(&api) + entry.offset, sizeof(fn));
  return fn != nullptr;
}

bool valid_name(const char* name) {
  if (name == nullptr || *name == '\0') return false;
  for (const char* c = name; *c; ++c) {
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return false;
  }
  return true;
}

[[noreturn]] void refuse(const std::string& path, const std::string& reason) {
  throw PluginLoadError(HAL_STATUS_UNAVAILABLE, "cannot load plugin " + path + ": " + reason);
}

std::string machine_name(uint16_t machine) {
  switch (machine) {
    case EM_X86_64: return "x86-64";
    case EM_386: return "x86 (32-bit)";
    case EM_AARCH64: return "AArch64";
    case EM_ARM: return "ARM (32-bit)";
    case EM_RISCV: return "RISC-V";
    case EM_PPC64: return "PowerPC 64";
    case EM_PPC: return "PowerPC";
    case EM_S390: return "s390";
    case EM_MIPS: return "MIPS";
    case EM_LOONGARCH: return "LoongArch";
    default: return "machine type " + std::to_string(machine);
  }
}

// The first bytes of |path| (up to an ELF header), or nullopt when it cannot be opened.
std::optional<std::string> read_header(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  std::string header(sizeof(Elf64_Ehdr), '\0');
  file.read(header.data(), static_cast<std::streamsize>(header.size()));
  header.resize(static_cast<size_t>(file.gcount()));
  return header;
}

// Why dlopen refused |path|, from its ELF header compared with this process's; empty when the header
// explains nothing (a missing file, a missing dependency: dlopen's text then says it).
std::string elf_diagnosis(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return "it is a directory, not a plugin file";
  const std::optional<std::string> read = read_header(path), own = read_header("/proc/self/exe");
  if (!read || !own || own->size() < sizeof(Elf32_Ehdr)) return "";
  const std::string &file = *read, &self = *own;
  if (file.size() < SELFMAG || std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) {
    return "it is not an ELF file (a plugin is a shared library built for this machine)";
  }
  const auto bits = [](char cls) { return cls == ELFCLASS32 ? "32-bit" : cls == ELFCLASS64 ? "64-bit" : "?-bit"; };
  if (file.size() <= EI_DATA) return "it is a truncated ELF file (" + std::to_string(file.size()) + " bytes)";
  if (file[EI_CLASS] != self[EI_CLASS]) {
    return std::string("it is a ") + bits(file[EI_CLASS]) + " ELF file, but this process is " + bits(self[EI_CLASS]);
  }
  if (file[EI_DATA] != self[EI_DATA]) {
    const auto order = [](char data) { return data == ELFDATA2MSB ? "big-endian" : "little-endian"; };
    return std::string("it is a ") + order(file[EI_DATA]) + " ELF file, but this process is " + order(self[EI_DATA]);
  }
  const size_t header_size = file[EI_CLASS] == ELFCLASS32 ? sizeof(Elf32_Ehdr) : sizeof(Elf64_Ehdr);
  if (file.size() < header_size) return "it is a truncated ELF file (" + std::to_string(file.size()) + " bytes)";
  // e_type and e_machine sit at the same offsets in both classes; the byte order is this process's.
  uint16_t type = 0, machine = 0, own_machine = 0;
  std::memcpy(&type, file.data() + offsetof(Elf64_Ehdr, e_type), sizeof(type));
  std::memcpy(&machine, file.data() + offsetof(Elf64_Ehdr, e_machine), sizeof(machine));
  std::memcpy(&own_machine, self.data() + offsetof(Elf64_Ehdr, e_machine), sizeof(own_machine));
  if (machine != own_machine) {
    return "it is an ELF file for " + machine_name(machine) + ", but this process is " + machine_name(own_machine);
  }
  if (type != ET_DYN) {
    return type == ET_EXEC ? "it is an ELF executable, not a shared library"
                           : type == ET_REL ? "it is an ELF object file (.o), not a shared library (link it with -shared)"
                                            : "it is not an ELF shared library";
  }
  return "";
}

// Reads the extension chain starting at |first| into |out| as (name, version); returns why it is malformed
// (extension.h, "Rules"), or "" when it is not.
std::string read_extensions(const hal_extension_t* first, std::vector<std::pair<std::string, uint32_t>>* out) {
  std::vector<const hal_extension_t*> seen;
  for (const hal_extension_t* e = first; e != nullptr; e = e->next) {
    const std::string at = "link " + std::to_string(seen.size());
    if (std::find(seen.begin(), seen.end(), e) != seen.end()) {
      return at + " points back to link " + std::to_string(std::find(seen.begin(), seen.end(), e) - seen.begin()) +
             " (a cycle)";
    }
    if (seen.size() == HAL_EXTENSIONS_MAX) return "more than " + std::to_string(HAL_EXTENSIONS_MAX) + " links";
    if (e->struct_size < sizeof(hal_extension_t)) {
      return at + " has struct_size " + std::to_string(e->struct_size) + " < sizeof(hal_extension_t) " +
             std::to_string(sizeof(hal_extension_t));
    }
    const bool named = e->name != nullptr && *e->name != '\0' &&
                       std::all_of(e->name, e->name + std::strlen(e->name), [](char c) {
                         return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
                       });
    if (!named) {
      return at + " has an invalid name '" + (e->name ? e->name : "(null)") + "' (must match [a-z0-9_.]+)";
    }
    if (e->version == 0) return at + " ('" + e->name + "') has version 0 (versions start at 1)";
    for (const auto& [name, version] : *out) {
      if (name == e->name) return at + " repeats the name '" + name + "'";
    }
    seen.push_back(e);
    out->emplace_back(e->name, e->version);
  }
  return "";
}

}  // namespace

const std::vector<PluginEntry>& plugin_entries() {
  static const std::vector<PluginEntry> entries = {
#define HAL_ENTRY(name, required) {#name, offsetof(hal_plugin_api_t, name), required},
      HAL_PLUGIN_ENTRY_LIST(HAL_ENTRY)
#undef HAL_ENTRY
  };
  return entries;
}

void* Plugin::open_table(const std::string& path, hal_plugin_api_t* out_api, PluginInspection* out_info) {
  std::memset(out_api, 0, sizeof(*out_api));
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* error = dlerror();
    const std::string why = error ? error : "dlopen failed";
    const std::string diagnosis = elf_diagnosis(path);
    refuse(path, "not a loadable shared library: " + (diagnosis.empty() ? why : diagnosis + " (dlopen: " + why + ")"));
  }
  try {
    auto get_api = reinterpret_cast<hal_plugin_get_api_fn>(dlsym(handle, HAL_PLUGIN_ENTRY_SYMBOL));
    if (get_api == nullptr) refuse(path, "missing entry symbol " HAL_PLUGIN_ENTRY_SYMBOL);
    const hal_plugin_api_t* table = get_api();
    if (table == nullptr) refuse(path, HAL_PLUGIN_ENTRY_SYMBOL "() returned NULL");
    out_info->abi_major = table->abi_major;
    out_info->abi_minor = table->abi_minor;
    out_info->struct_size = table->struct_size;
    out_info->name = table->name ? table->name : "";
    out_info->version = table->version ? table->version : "";
    // Copy what the plugin has (zero-filled beyond it) before judging it, so inspection can report it.
    std::memcpy(out_api, table, std::min(table->struct_size, sizeof(hal_plugin_api_t)));
    out_api->struct_size = table->struct_size;
    const std::string versions = "plugin ABI " + version_text(table->abi_major, table->abi_minor) +
                                 ", loader ABI " + version_text(HAL_ABI_VERSION_MAJOR, HAL_ABI_VERSION_MINOR);
    if (table->abi_major != HAL_ABI_VERSION_MAJOR) {
      refuse(path, "incompatible ABI major version (" + versions + ")");
    }
    if (table->abi_minor < kMinAbiMinor) {
      refuse(path, "ABI minor version too old (" + versions + ", minimum " +
                       version_text(HAL_ABI_VERSION_MAJOR, kMinAbiMinor) + ")");
    }
    if (table->struct_size < kMinStructSize) {
      refuse(path, "entry table too small (struct_size " + std::to_string(table->struct_size) +
                       " < " + std::to_string(kMinStructSize) + " required by ABI 1.0; " + versions + ")");
    }
    std::string missing;
    for (const PluginEntry& entry : plugin_entries()) {
      if (entry.required && !entry_present(*out_api, entry)) missing += (missing.empty() ? "" : ", ") + std::string(entry.name);
    }
    if (!missing.empty()) refuse(path, "missing required entries: " + missing);
    for (const auto& [group, names] : entry_groups()) {
      std::string have, lack;
      for (const char* name : names) {
        const auto it = std::find_if(plugin_entries().begin(), plugin_entries().end(),
                                     [&](const PluginEntry& e) { return std::strcmp(e.name, name) == 0; });
        std::string& list = entry_present(*out_api, *it) ? have : lack;
        list += (list.empty() ? "" : ", ") + std::string(name);
      }
      if (!have.empty() && !lack.empty()) {
        refuse(path, std::string("incomplete ") + group + " entries (kernel.h: all or none): has " + have +
                         " but lacks " + lack);
      }
    }
    if (!valid_name(out_api->name)) {
      refuse(path, std::string("invalid plugin name '") + (out_api->name ? out_api->name : "(null)") +
                       "' (must match [a-z0-9_]+)");
    }
    out_info->extensions.clear();
    if (std::string why = read_extensions(out_api->extensions, &out_info->extensions); !why.empty()) {
      refuse(path, "malformed extension chain (extension.h): " + why);
    }
  } catch (...) {
    dlclose(handle);
    throw;
  }
  return handle;
}

PluginInspection inspect_plugin(const std::string& path) {
  PluginInspection info;
  info.path = path;
  hal_plugin_api_t api;
  void* handle = nullptr;
  try {
    handle = Plugin::open_table(path, &api, &info);
  } catch (const Error& e) {
    info.error = e.what();  // The table was still copied as far as it could be read.
  }
  for (const PluginEntry& entry : plugin_entries()) info.entries.emplace_back(entry.name, entry_present(api, entry));
  if (handle != nullptr) dlclose(handle);
  return info;
}

std::unique_ptr<Plugin> Plugin::load(const std::string& path, const std::string& config) {
  std::unique_ptr<Plugin> plugin(new Plugin());
  PluginInspection info;
  plugin->handle_ = open_table(path, &plugin->api_, &info);
  plugin->path_ = path;
  plugin->name_ = info.name;
  plugin->version_ = info.version;
  plugin->abi_major_ = info.abi_major;
  plugin->abi_minor_ = info.abi_minor;
  if (validation::enabled()) {
    hal_plugin_api_t checked;
    plugin->validation_slot_ = validation::wrap(plugin->api_, plugin->name_, &checked);
    plugin->api_ = checked;
  }
  plugin->alive_ = true;

  hal_plugin_init_args_t args{};
  args.struct_size = sizeof(args);
  args.loader_abi_major = HAL_ABI_VERSION_MAJOR;
  args.loader_abi_minor = HAL_ABI_VERSION_MINOR;
  args.config = config.empty() ? nullptr : config.c_str();
  bool initialized = false;
  try {
    plugin->check(plugin->api_.initialize(&args), "initialize");
    initialized = true;
    int32_t count = 0;
    plugin->check(plugin->api_.device_count(&count), "device_count");
    plugin->device_count_ = count < 0 ? 0 : count;
  } catch (const Error& e) {
    // After a successful initialize, shutdown is owed; the destructor then only dlcloses.
    if (initialized) plugin->api_.shutdown();
    plugin->alive_ = false;
    throw PluginLoadError(e.code(), e.what(), e.plugin(), e.device(), e.native_code());
  }
  return plugin;
}

Plugin::~Plugin() { shutdown(); }

PluginInspection Plugin::info() const {
  PluginInspection info;
  info.path = path_;
  info.name = name_;
  info.version = version_;
  info.abi_major = abi_major_;
  info.abi_minor = abi_minor_;
  info.struct_size = api_.struct_size;
  info.device_count = device_count_;
  for (const hal_extension_t* e = api_.extensions; e != nullptr; e = e->next) info.extensions.emplace_back(e->name, e->version);
  for (const PluginEntry& entry : plugin_entries()) info.entries.emplace_back(entry.name, entry_present(api_, entry));
  return info;
}

std::string Plugin::describe() const { return "plugin '" + name_ + "' at " + path_; }

const hal_plugin_api_t& Plugin::api() const {
  if (!alive_.load(std::memory_order_acquire)) {
    throw Error(HAL_STATUS_UNAVAILABLE, describe() + ": " + closed_reason_.load(), name_);
  }
  return api_;
}

void Plugin::close(const char* reason) noexcept {
  closed_reason_.store(reason);
  alive_.store(false, std::memory_order_release);
}

const hal_extension_t* Plugin::find_extension(std::string_view name, uint32_t min_version,
                                              size_t min_struct_size) const {
  for (const hal_extension_t* e = api_.extensions; e != nullptr; e = e->next) {  // Checked at load.
    if (name == e->name) {
      return e->version >= min_version && e->struct_size >= min_struct_size ? e : nullptr;
    }
  }
  return nullptr;
}

bool Plugin::has(std::string_view entry) const {
  for (const PluginEntry& e : plugin_entries()) {
    if (entry == e.name) return entry_present(api_, e);
  }
  return false;
}

void Plugin::throw_unimplemented(const char* entry) const {
  throw Error(HAL_STATUS_UNIMPLEMENTED, "plugin '" + name_ + "' does not support " + entry, name_);
}

std::string Plugin::last_error(int32_t* out_native) const {
  char buffer[1024];
  int32_t native = 0;
  size_t length = api_.get_last_error(buffer, sizeof(buffer), &native);
  std::string message(buffer, std::min(length, sizeof(buffer) - 1));
  if (length >= sizeof(buffer)) {  // Read the whole message.
    std::string full(length + 1, '\0');
    api_.get_last_error(full.data(), full.size(), &native);
    full.resize(length);
    message = std::move(full);
  }
  if (out_native != nullptr) *out_native = native;
  return message;
}

void Plugin::check(hal_status_t status, const char* call, const std::string& device) const {
  if (status == HAL_STATUS_OK) return;
  int32_t native = 0;
  const std::string message = last_error(&native);
  std::string text = (device.empty() ? "" : device + " (") + describe() + (device.empty() ? "" : ")") +
                     ": " + call + " failed: " + hal_status_name(status);
  if (!message.empty()) text += ": " + message;
  if (native != 0) text += " [native code " + std::to_string(native) + "]";
  throw Error(status, text, name_, device, native);
}

void Plugin::shutdown() {
  if (handle_ == nullptr) return;
  if (alive_.exchange(false)) api_.shutdown();
  dlclose(handle_);
  handle_ = nullptr;
  validation::release(validation_slot_);
  validation_slot_ = -1;
}

}  // namespace hal
