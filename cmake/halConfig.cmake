# find_package(hal CONFIG): HAL's plugin SDK, for building a device plugin outside HAL's source tree.
#
#   find_package(hal CONFIG REQUIRED)       # -Dhal_DIR=$(hal sdk --cmake-dir), or CMAKE_PREFIX_PATH
#   hal_add_plugin(mychip mychip.c)         # -> ${HAL_PLUGIN_OUTPUT_DIR}/libhal_plugin_mychip.so
#
# Gives:
#   hal::plugin_headers   INTERFACE target: the ABI headers (#include "hal/hal.h"); all a plugin needs
#   hal_add_plugin()      see halPlugin.cmake
#   HAL_ABI_VERSION       the ABI these headers define ("1.1"; HAL_ABI_VERSION_MAJOR / _MINOR)
#   HAL_SDK_DIR           the SDK's root: include/, cmake/, samples/, src/plugin_smoke.c, bin/plugin_smoke
#   HAL_PLUGIN_SMOKE      the smoke driver (bin/plugin_smoke), and HAL_PLUGIN_SMOKE_SOURCE its source
# The package's version (halConfigVersion.cmake) is HAL's; the ABI version is what a plugin is built against.
# This file is relocatable: every path is found from its own location.
get_filename_component(HAL_SDK_DIR "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)

if(NOT EXISTS "${HAL_SDK_DIR}/include/hal/plugin.h")
  set(hal_FOUND FALSE)
  set(hal_NOT_FOUND_MESSAGE "the HAL SDK at ${HAL_SDK_DIR} has no include/hal/plugin.h")
  return()
endif()

file(STRINGS "${HAL_SDK_DIR}/include/hal/plugin.h" _hal_abi REGEX "^#define HAL_ABI_VERSION_M(AJ|IN)OR ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*" "\\1" HAL_ABI_VERSION_MAJOR "${_hal_abi}")
string(REGEX REPLACE ".*MINOR ([0-9]+).*" "\\1" HAL_ABI_VERSION_MINOR "${_hal_abi}")
set(HAL_ABI_VERSION "${HAL_ABI_VERSION_MAJOR}.${HAL_ABI_VERSION_MINOR}")
unset(_hal_abi)

set(HAL_PLUGIN_SMOKE "${HAL_SDK_DIR}/bin/plugin_smoke")
set(HAL_PLUGIN_SMOKE_SOURCE "${HAL_SDK_DIR}/src/plugin_smoke.c")

# HAL's own build defines hal::plugin_headers (an alias of its headers in the source tree) before it
# builds its plugins with this file; everywhere else it is the headers next to this file.
if(NOT TARGET hal::plugin_headers)
  add_library(hal::plugin_headers INTERFACE IMPORTED)
  set_target_properties(hal::plugin_headers PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${HAL_SDK_DIR}/include")
endif()

include("${CMAKE_CURRENT_LIST_DIR}/halPlugin.cmake")
