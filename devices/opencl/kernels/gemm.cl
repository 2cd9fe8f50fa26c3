// --- GEMM: C[b] = A[b] @ B[b], any strides ----------------------------------------------------------------
// Tiles of TS x TS in local memory; each work item computes WPT x WPT outputs (register blocking). Work
// groups of (TS/WPT) x (TS/WPT) items; the grid is (ceil(m/TS) * TS/WPT, ceil(n/TS) * TS/WPT, batch).
#define TS 32
#define WPT 4
#define RTS (TS / WPT)

__kernel __attribute__((reqd_work_group_size(RTS, RTS, 1)))
void gemm_f32(__global const float* A, ulong a_off, long sa_b, long sa_m, long sa_k, long a_elem,
              __global const float* B, ulong b_off, long sb_b, long sb_k, long sb_n, long b_elem,
              __global float* C, ulong c_off, long sc_b, long sc_m, long sc_n, long c_elem,
              long M, long N, long K) {
  __local float As[TS][TS + 1];
  __local float Bs[TS][TS + 1];
  const int tr = get_local_id(0), tc = get_local_id(1);
  const long row0 = get_group_id(0) * TS, col0 = get_group_id(1) * TS;
  const long batch = get_global_id(2);
  __global const float* a = AT(const float, A, a_off) + a_elem + batch * sa_b;
  __global const float* b = AT(const float, B, b_off) + b_elem + batch * sb_b;
  float acc[WPT][WPT];
  for (int i = 0; i < WPT; i++)
    for (int j = 0; j < WPT; j++) acc[i][j] = 0.0f;
  for (long k0 = 0; k0 < K; k0 += TS) {
    for (int i = 0; i < WPT; i++) {
      for (int j = 0; j < WPT; j++) {
        const int lr = tr * WPT + i, lc = tc * WPT + j;
        const long ar = row0 + lr, ak = k0 + lc;
        As[lr][lc] = (ar < M && ak < K) ? a[ar * sa_m + ak * sa_k] : 0.0f;
        const long bk = k0 + lr, bc = col0 + lc;
        Bs[lr][lc] = (bk < K && bc < N) ? b[bk * sb_k + bc * sb_n] : 0.0f;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int kk = 0; kk < TS; kk++) {
      float av[WPT], bv[WPT];
      for (int i = 0; i < WPT; i++) av[i] = As[tr * WPT + i][kk];
      for (int j = 0; j < WPT; j++) bv[j] = Bs[kk][tc * WPT + j];
      for (int i = 0; i < WPT; i++)
        for (int j = 0; j < WPT; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  __global float* c = AT(float, C, c_off) + c_elem + batch * sc_b;
  for (int i = 0; i < WPT; i++) {
    for (int j = 0; j < WPT; j++) {
      const long r = row0 + tr * WPT + i, col = col0 + tc * WPT + j;
      if (r < M && col < N) c[r * sc_m + col * sc_n] = acc[i][j];
    }
  }
}
