// Convolution as GEMM (ops_conv.c): im2col lays a chunk of |NB| images out as columns, col[row][n][p] with row
// (c * KH + i) * KW + j and p = oh * OW + ow, so one (batched) GEMM with the weight computes the output, the
// weight's gradient and the columns' gradient; col2im gathers the latter back into the input's gradient. Pooling:
// max_pool2d and its backward. Every work item does EW_CHUNK consecutive positions of one plane; tensors are
// strided (x: element offset xo and strides xn, xc, xh, xw), columns contiguous.
__kernel void im2col_f32(__global const float* x, ulong x_off, long xo, long xn, long xc, long xh, long xw,
                         __global float* col, ulong col_off, long H, long W, long KH, long KW, long SH, long SW,
                         long PH, long PW, long DH, long DW, long OH, long OW, long NB) {
  const long row = get_global_id(1), n = get_global_id(2), ohw = OH * OW;
  const long c = row / (KH * KW), i = row / KW % KH, j = row % KW;
  __global const float* X = AT(const float, x, x_off) + xo + n * xn + c * xc;
  __global float* out = AT(float, col, col_off) + (row * NB + n) * ohw;
  const long begin = get_global_id(0) * EW_CHUNK, end = min(begin + EW_CHUNK, ohw);
  for (long p = begin; p < end; p++) {
    const long h = p / OW * SH - PH + i * DH, w = p % OW * SW - PW + j * DW;
    out[p] = h >= 0 && h < H && w >= 0 && w < W ? X[h * xh + w * xw] : 0.0f;
  }
}

// gx[n][c][h][w] = the sum, over the kernel positions (i, j) whose window covers (h, w), of the columns' gradient.
__kernel void col2im_f32(__global const float* col, ulong col_off, __global float* gx, ulong gx_off, long go,
                         long gn, long gc, long gh, long gw, long H, long W, long KH, long KW, long SH, long SW,
                         long PH, long PW, long DH, long DW, long OH, long OW, long NB) {
  const long c = get_global_id(1), n = get_global_id(2), ohw = OH * OW;
  __global const float* C = AT(const float, col, col_off) + (c * KH * KW * NB + n) * ohw;
  __global float* G = AT(float, gx, gx_off) + go + n * gn + c * gc;
  const long begin = get_global_id(0) * EW_CHUNK, end = min(begin + EW_CHUNK, H * W);
  for (long p = begin; p < end; p++) {
    const long h = p / W, w = p % W;
    float sum = 0.0f;
    for (long i = 0; i < KH; i++) {
      const long hh = h + PH - i * DH;
      if (hh < 0 || hh % SH) continue;
      const long oh = hh / SH;
      if (oh >= OH) continue;
      for (long j = 0; j < KW; j++) {
        const long ww = w + PW - j * DW;
        if (ww < 0 || ww % SW) continue;
        const long ow = ww / SW;
        if (ow < OW) sum += C[(i * KW + j) * NB * ohw + oh * OW + ow];
      }
    }
    G[h * gh + w * gw] = sum;
  }
}

// out / idx [n][c][oh][ow]: the largest element of the window (the last NaN wins, as on the CPU) and its index h * W + w
// in the input's plane. x's planes are indexed by n * C + c (get_global_id(1)).
__kernel void max_pool2d_f32(__global const float* x, ulong x_off, long xo, long xn, long xc, long xh, long xw,
                             __global float* out, ulong out_off, long oo, long on, long oc, long oh_, long ow_,
                             __global long* idx, ulong idx_off, long io, long in_, long ic, long ih, long iw,
                             long C, long H, long W, long KH, long KW, long SH, long SW, long PH, long PW,
                             long DH, long DW, long OH, long OW) {
  const long plane = get_global_id(1), n = plane / C, c = plane % C;
  __global const float* X = AT(const float, x, x_off) + xo + n * xn + c * xc;
  __global float* O = AT(float, out, out_off) + oo + n * on + c * oc;
  __global long* I = AT(long, idx, idx_off) + io + n * in_ + c * ic;
  const long begin = get_global_id(0) * EW_CHUNK, end = min(begin + EW_CHUNK, OH * OW);
  for (long p = begin; p < end; p++) {
    const long oh = p / OW, ow = p % OW;
    float best = -INFINITY;
    long at = -1;
    for (long i = 0; i < KH; i++) {
      const long h = oh * SH - PH + i * DH;
      if (h < 0 || h >= H) continue;
      for (long j = 0; j < KW; j++) {
        const long w = ow * SW - PW + j * DW;
        if (w < 0 || w >= W) continue;
        const float v = X[h * xh + w * xw];
        if (v > best || isnan(v) || at < 0) {
          best = v;
          at = h * W + w;
        }
      }
    }
    O[oh * oh_ + ow * ow_] = best;
    I[oh * ih + ow * iw] = at;
  }
}

// gx[n][c][h][w] = the sum of the output gradients whose window chose (h, w), in the output's order (the CPU's).
__kernel void max_pool2d_backward_f32(__global const float* g, ulong g_off, long go, long gn, long gc, long gh,
                                      long gw, __global const long* idx, ulong idx_off, long io, long in_, long ic,
                                      long ih, long iw, __global float* gx, ulong gx_off, long xo, long xn,
                                      long xc, long xh, long xw, long C, long H, long W, long KH, long SH,
                                      long PH, long DH, long KW, long SW, long PW, long DW, long OH, long OW) {
  const long plane = get_global_id(1), n = plane / C, c = plane % C;
  __global const float* G = AT(const float, g, g_off) + go + n * gn + c * gc;
  __global const long* I = AT(const long, idx, idx_off) + io + n * in_ + c * ic;
  __global float* X = AT(float, gx, gx_off) + xo + n * xn + c * xc;
  const long begin = get_global_id(0) * EW_CHUNK, end = min(begin + EW_CHUNK, H * W);
  for (long p = begin; p < end; p++) {
    const long h = p / W, w = p % W;
    const long hl = h + PH - (KH - 1) * DH, wl = w + PW - (KW - 1) * DW;
    const long oh0 = hl <= 0 ? 0 : (hl + SH - 1) / SH, oh1 = min(OH - 1, (h + PH) / SH);
    const long ow0 = wl <= 0 ? 0 : (wl + SW - 1) / SW, ow1 = min(OW - 1, (w + PW) / SW);
    float sum = 0.0f;
    for (long oh = oh0; oh <= oh1; oh++) {
      for (long ow = ow0; ow <= ow1; ow++) {
        if (I[oh * ih + ow * iw] == p) sum += G[oh * gh + ow * gw];
      }
    }
    X[h * xh + w * xw] = sum;
  }
}
