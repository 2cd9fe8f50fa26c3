# The plugin SDK inside the Python package (HAL_PYTHON_OUTPUT_DIR/sdk, so a wheel ships it and an in-place
# or editable build has it next to hal._C), for building plugins outside HAL's source tree:
#   include/hal/*.h       the ABI headers (csrc/include/hal)
#   cmake/                halConfig.cmake, halConfigVersion.cmake, halPlugin.cmake: find_package(hal CONFIG)
#   samples/null/         the skeleton plugin (devices/null), which builds on its own
#   samples/emu/, common/ the worked sample (devices/emu) and the software stream engine it builds on
#   src/plugin_smoke.c    the smoke driver's source (tests/c), for building it elsewhere (a board)
#   bin/plugin_smoke      the smoke driver, built
#   plugin-sdk.md         the guide (docs/plugin-sdk.md)
# `hal sdk --cmake-dir / --include / --samples / --smoke` print where they are (hal/plugin_sdk.py). The
# files are copied at configure time; CMake configures again when one of them changes.
include(CMakePackageConfigHelpers)

set(HAL_SDK_DIR "${HAL_PYTHON_OUTPUT_DIR}/sdk")

function(hal_sdk_copy destination)
  foreach(file IN LISTS ARGN)
    get_filename_component(file_name "${file}" NAME)
    configure_file("${CMAKE_CURRENT_SOURCE_DIR}/${file}" "${HAL_SDK_DIR}/${destination}/${file_name}" COPYONLY)
  endforeach()
endfunction()

file(GLOB hal_sdk_headers RELATIVE "${CMAKE_CURRENT_SOURCE_DIR}" CONFIGURE_DEPENDS
     "${CMAKE_CURRENT_SOURCE_DIR}/csrc/include/hal/*.h")
hal_sdk_copy(include/hal ${hal_sdk_headers})
hal_sdk_copy(cmake cmake/halConfig.cmake cmake/halPlugin.cmake)
write_basic_package_version_file("${HAL_SDK_DIR}/cmake/halConfigVersion.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
hal_sdk_copy(samples/null devices/null/CMakeLists.txt devices/null/README.md devices/null/null_plugin.c)
file(GLOB hal_sdk_engine RELATIVE "${CMAKE_CURRENT_SOURCE_DIR}" CONFIGURE_DEPENDS
     "${CMAKE_CURRENT_SOURCE_DIR}/devices/common/*")
hal_sdk_copy(samples/common ${hal_sdk_engine})
hal_sdk_copy(samples/emu devices/emu/CMakeLists.txt devices/emu/emu.c devices/emu/emu_ops.c)
hal_sdk_copy(src tests/c/plugin_smoke.c)
hal_sdk_copy(. docs/plugin-sdk.md)

add_executable(hal_plugin_smoke tests/c/plugin_smoke.c)
target_link_libraries(hal_plugin_smoke PRIVATE hal_abi ${CMAKE_DL_LIBS} Threads::Threads)
target_compile_options(hal_plugin_smoke PRIVATE ${HAL_WARNINGS})
set_target_properties(hal_plugin_smoke PROPERTIES OUTPUT_NAME plugin_smoke RUNTIME_OUTPUT_DIRECTORY "${HAL_SDK_DIR}/bin")

# HAL's own plugins that follow the vendor's path (devices/null: find_package(hal CONFIG)) find this copy.
set(hal_DIR "${HAL_SDK_DIR}/cmake")
