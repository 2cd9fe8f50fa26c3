# hal_add_plugin(NAME [VERSION version] SOURCES...): builds the HAL device plugin libhal_plugin_NAME.so.
#
# The one definition, used by HAL's own build (CMakeLists.txt includes this file) and by a vendor's project
# through find_package(hal CONFIG), which includes the copy shipped in the installed package.
#  - It links hal::plugin_headers (the ABI headers; no HAL library is ever linked) and builds as C11 / C++17
#    or later, with the compiler's extensions (gnu11): sources that use POSIX or Linux calls still define
#    _GNU_SOURCE themselves, so they also build with a plain `cc -std=c11`.
#  - Only the entry symbol is exported (hidden visibility; HAL_PLUGIN_EXPORT marks hal_plugin_get_api).
#  - HAL_PLUGIN_VERSION, the plugin's own version for its table's .version, is VERSION, else the
#    project's version; with neither, the source's own default applies.
#  - The library is written to HAL_PLUGIN_OUTPUT_DIR, by default ${CMAKE_BINARY_DIR}/plugins: a folder of
#    plugins only, to name in HAL_PLUGIN_PATH (the runtime loads every libhal_plugin_*.so of a folder named
#    there, and never searches the current folder unless it is named).
include_guard(GLOBAL)

set(HAL_PLUGIN_OUTPUT_DIR "${CMAKE_BINARY_DIR}/plugins" CACHE PATH "Where hal_add_plugin writes the plugins")

function(hal_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "VERSION" "")
  if(NOT name MATCHES "^[a-z0-9_]+$")
    message(FATAL_ERROR "hal_add_plugin: plugin name '${name}' is not [a-z0-9_]+ (it is used in device names)")
  endif()
  if(NOT ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "hal_add_plugin(${name}): no source files")
  endif()
  if(NOT TARGET hal::plugin_headers)
    message(FATAL_ERROR "hal_add_plugin(${name}): no target hal::plugin_headers; use find_package(hal CONFIG)")
  endif()
  set(target hal_plugin_${name})
  add_library(${target} SHARED ${ARG_UNPARSED_ARGUMENTS})
  target_link_libraries(${target} PRIVATE hal::plugin_headers)
  get_property(languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if("C" IN_LIST languages)
    target_compile_features(${target} PRIVATE c_std_11)
  endif()
  if("CXX" IN_LIST languages)
    target_compile_features(${target} PRIVATE cxx_std_17)
  endif()
  set(version "${ARG_VERSION}")
  if(version STREQUAL "")
    set(version "${PROJECT_VERSION}")
  endif()
  if(NOT version STREQUAL "")
    target_compile_definitions(${target} PRIVATE HAL_PLUGIN_VERSION="${version}")
  endif()
  set(gnu_like "$<OR:$<COMPILE_LANG_AND_ID:C,GNU,Clang>,$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>>")
  target_compile_options(${target} PRIVATE "$<${gnu_like}:-Wall;-Wextra;-Wno-unused-parameter>")
  set_target_properties(${target} PROPERTIES
    C_VISIBILITY_PRESET hidden CXX_VISIBILITY_PRESET hidden
    LIBRARY_OUTPUT_DIRECTORY "${HAL_PLUGIN_OUTPUT_DIR}")
endfunction()
