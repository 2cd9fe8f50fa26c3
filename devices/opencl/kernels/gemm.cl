// --- GEMM: C[b] = A[b] @ B[b], any strides ----------------------------------------------------------------
// Two ways, chosen per device (ops_gemm.c): gemm_f32 for GPUs, work groups sharing tiles in local memory; and
// for CPU devices the packed GEMM below, one work item per cache block, as CPU BLAS libraries do it.
//
// gemm_f32: tiles of TS x TS in local memory; each work item computes WPT x WPT outputs (register blocking). Work
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

// The packed GEMM, for devices whose work items are CPU threads (pocl and the like): local memory is ordinary
// memory there, barriers are costly and SIMD lanes come from vector types, so each work item computes a whole
// MC x NC block of C the way BLIS does. A and B are first packed (gemm_pack_a, gemm_pack_b) into panels whose
// micro-kernel reads are consecutive: Ap[m / MR][k][m % MR] and Bp[n / NR][k][n % NR], zero past M and N, so
// the micro-kernel always computes a full MR x NR tile of accumulators in registers (MR * 2 vectors) and only
// its stores are clipped. GEMM_VEC (the build option -DGEMM_VEC=n: the device's preferred float vector width)
// sets NR = 2 * GEMM_VEC. The host splits large problems into chunks of K, M and N that bound the packed
// panels' scratch; |accumulate| adds into C for every K chunk after the first.
#ifndef GEMM_VEC
#define GEMM_VEC 8
#endif
#define GEMM_MR 8
#define GEMM_NR (2 * GEMM_VEC)
#define GEMM_MC 64
#define GEMM_NC 256
#define GEMM_KC 256
#define GEMM_CAT_(a, b) a##b
#define GEMM_CAT(a, b) GEMM_CAT_(a, b)
#define floatv GEMM_CAT(float, GEMM_VEC)
#define vloadv GEMM_CAT(vload, GEMM_VEC)
#define vstorev GEMM_CAT(vstore, GEMM_VEC)

// Ap[b][m / MR][k][m % MR] = A[b][m][k] for a block of M x K; grid (K, ceil(M / MR), batch): neighbouring work
// items (the runtime's inner loop) take neighbouring k, so both sides of the copy run along memory.
__kernel void gemm_pack_a(__global float* ap, ulong ap_off, long ap_batch, __global const float* A, ulong a_off,
                          long sa_b, long sa_m, long sa_k, long a_elem, long M, long K) {
  const long k = get_global_id(0), mp = get_global_id(1), b = get_global_id(2);
  __global float* dst = AT(float, ap, ap_off) + b * ap_batch + (mp * K + k) * GEMM_MR;
  __global const float* src = AT(const float, A, a_off) + a_elem + b * sa_b + k * sa_k + mp * GEMM_MR * sa_m;
  const long rows = min((long)GEMM_MR, M - mp * GEMM_MR);
  for (int r = 0; r < GEMM_MR; r++) dst[r] = r < rows ? src[r * sa_m] : 0.0f;
}

// Bp[b][n / NR][k][n % NR] = B[b][k][n] for a block of K x N; grid (K, ceil(N / NR), batch).
__kernel void gemm_pack_b(__global float* bp, ulong bp_off, long bp_batch, __global const float* B, ulong b_off,
                          long sb_b, long sb_k, long sb_n, long b_elem, long N, long K) {
  const long k = get_global_id(0), np = get_global_id(1), b = get_global_id(2);
  __global float* dst = AT(float, bp, bp_off) + b * bp_batch + (np * K + k) * GEMM_NR;
  __global const float* src = AT(const float, B, b_off) + b_elem + b * sb_b + k * sb_k + np * GEMM_NR * sb_n;
  const long cols = min((long)GEMM_NR, N - np * GEMM_NR);
  if (cols == GEMM_NR && sb_n == 1) {
    vstorev(vloadv(0, src), 0, dst);
    vstorev(vloadv(1, src), 1, dst);
  } else {
    for (int c = 0; c < GEMM_NR; c++) dst[c] = c < cols ? src[c * sb_n] : 0.0f;
  }
}

// C[b] (+)= Ap[b] @ Bp[b] for a block of M x N x K; grid (ceil(M / MC), ceil(N / NC), batch), one item a group.
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void gemm_packed(__global float* C, ulong c_off, long sc_b, long sc_m, long sc_n, long c_elem,
                 __global const float* ap, ulong ap_off, long ap_batch, __global const float* bp, ulong bp_off,
                 long bp_batch, long M, long N, long K, int accumulate) {
  const long m0 = get_global_id(0) * GEMM_MC, n0 = get_global_id(1) * GEMM_NC, b = get_global_id(2);
  __global const float* A = AT(const float, ap, ap_off) + b * ap_batch;
  __global const float* B = AT(const float, bp, bp_off) + b * bp_batch;
  __global float* c = AT(float, C, c_off) + c_elem + b * sc_b;
  const long m_end = min(m0 + GEMM_MC, M), n_end = min(n0 + GEMM_NC, N);
  for (long k0 = 0; k0 < K; k0 += GEMM_KC) {
    const int kc = (int)min((long)GEMM_KC, K - k0);
    const int add = accumulate || k0 > 0;
    for (long j = n0; j < n_end; j += GEMM_NR) {
      __global const float* bpanel = B + ((j / GEMM_NR) * K + k0) * GEMM_NR;
      for (long i = m0; i < m_end; i += GEMM_MR) {
        __global const float* apanel = A + ((i / GEMM_MR) * K + k0) * GEMM_MR;
        floatv c0[GEMM_MR], c1[GEMM_MR];
        // Every loop over r unrolled, so the accumulators are registers, not a private array on the stack.
#pragma unroll
        for (int r = 0; r < GEMM_MR; r++) c0[r] = c1[r] = (floatv)(0.0f);
        for (int k = 0; k < kc; k++) {
          const floatv b0 = vloadv(0, bpanel + k * GEMM_NR), b1 = vloadv(1, bpanel + k * GEMM_NR);
#pragma unroll
          for (int r = 0; r < GEMM_MR; r++) {
            const floatv a = (floatv)(apanel[k * GEMM_MR + r]);
            c0[r] = fma(a, b0, c0[r]);
            c1[r] = fma(a, b1, c1[r]);
          }
        }
        const int rows = (int)min((long)GEMM_MR, M - i), cols = (int)min((long)GEMM_NR, N - j);
#pragma unroll
        for (int r = 0; r < GEMM_MR; r++) {
          if (r >= rows) break;
          __global float* row = c + (i + r) * sc_m + j * sc_n;
          if (cols == GEMM_NR && sc_n == 1) {
            vstorev(add ? vloadv(0, row) + c0[r] : c0[r], 0, row);
            vstorev(add ? vloadv(1, row) + c1[r] : c1[r], 1, row);
          } else {
            float tile[GEMM_NR];
            vstorev(c0[r], 0, tile);
            vstorev(c1[r], 1, tile);
            for (int q = 0; q < cols; q++) row[q * sc_n] = add ? row[q * sc_n] + tile[q] : tile[q];
          }
        }
      }
    }
  }
}
