// The opencl plugin's operator kernels (OpenCL C 1.2), built once per device on first use (ops.c); the files of kernels/ are one program, common.cl first.
//
// Conventions. Every tensor is three parameters: its buffer, the byte offset of the tensor's storage in it (the
// BUFFER argument convention of the plugin), and a geom_t by value: sizes and strides (in elements) over the
// dimensions of the iteration space, 0 where the tensor is broadcast, and its element offset. The host lays the
// geometry out against the result's shape, so kernels never broadcast themselves.
#define MAXD 8

typedef struct {
  long size[MAXD];
  long stride[MAXD];
  long offset;
  int ndim;
  int pad;
} geom_t;

#define AT(type, buf, byte_off) ((__global type*)((__global char*)(buf) + (byte_off)))

// The element offsets of linear index i of the iteration space |it| in up to four tensors.
#define UNRAVEL(i, it, o0, g0, o1, g1, o2, g2, o3, g3)                                    \
  do {                                                                                   \
    long r_ = (i);                                                                       \
    o0 = g0.offset; o1 = g1.offset; o2 = g2.offset; o3 = g3.offset;                      \
    for (int d_ = it.ndim - 1; d_ >= 0; --d_) {                                          \
      long x_ = r_ % it.size[d_];                                                        \
      r_ /= it.size[d_];                                                                 \
      o0 += x_ * g0.stride[d_]; o1 += x_ * g1.stride[d_];                                \
      o2 += x_ * g2.stride[d_]; o3 += x_ * g3.stride[d_];                                \
    }                                                                                    \
  } while (0)
