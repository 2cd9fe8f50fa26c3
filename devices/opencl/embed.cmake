# Writes OUT, a C file defining ocl_ops_source (the bytes of IN, NUL-terminated) and ocl_ops_source_size.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "// Generated from ops.cl by embed.cmake; do not edit.\n#include <stddef.h>\n"
     "const char ocl_ops_source[] = {${bytes} 0x00};\n"
     "const size_t ocl_ops_source_size = sizeof(ocl_ops_source) - 1;\n")
