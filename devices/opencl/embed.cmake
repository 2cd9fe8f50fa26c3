# Writes OUT, a C file defining ocl_ops_source (the bytes of the files IN, a ;-list, one after the other,
# NUL-terminated) and ocl_ops_source_size.
set(bytes "")
foreach(file ${IN})
  file(READ ${file} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," part "${hex}")
  string(APPEND bytes "${part} 0x0a,\n")
endforeach()
file(WRITE ${OUT} "// Generated from kernels/*.cl by embed.cmake; do not edit.\n#include <stddef.h>\n"
     "const char ocl_ops_source[] = {${bytes} 0x00};\n"
     "const size_t ocl_ops_source_size = sizeof(ocl_ops_source) - 1;\n")
