// Device code of the CUDA capped-simplex projection (one thread per row, the row in registers) and A2D
// weight solver (one thread per problem). Same arithmetic, in the same order, as csrc/cpu/capped_simplex.cpp
// and the PyTorch reference (sdkd/ops/capped_simplex/), which documents the method.
//
// Included by capped_simplex.cu (nvcc) and, with SDKD_CUDA_EMU defined, by the CPU emulation test
// (tests/cuda_emu), which runs this code on machines without a GPU. The dispatch_* helpers pick the
// register-array size for M and hand the kernel to a launcher, so both share that choice.
#pragma once

#include <cstdint>

#ifndef SDKD_CUDA_EMU
#include <cuda_runtime.h>
#endif

namespace sdkd_capped_simplex_cuda {


template <typename T>
struct Lim;
template <>
struct Lim<float> {
  __device__ static float inf() { return __int_as_float(0x7f800000); }
  __device__ static float lowest() { return -3.402823466e+38f; }
  __device__ static float max() { return 3.402823466e+38f; }
  __device__ static float eps() { return 1.192092896e-07f; }
};
template <>
struct Lim<double> {
  __device__ static double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
  __device__ static double lowest() { return -1.7976931348623157e+308; }
  __device__ static double max() { return 1.7976931348623157e+308; }
  __device__ static double eps() { return 2.220446049250313e-16; }
};

template <typename T>
__device__ __forceinline__ T clampc(T v, T C) {
  return min(max(v, T(0)), C);
}

template <typename T>
__device__ __forceinline__ T shifted(T y, T s) {
  return min(max(y - s, Lim<T>::lowest()), Lim<T>::max());
}

// tau with sum clip(v_i - tau, 0, C) = 1 for finite v[0..M) (registers when MAXM is small), and in k_hi the
// coordinate owning the bracket's upper breakpoint (v_j or v_j - C, the first such j). bp_of(j) must return
// v[j] (read from memory so that the breakpoint loop needs no dynamic register indexing).
template <typename T, int MAXM, typename BP>
__device__ __forceinline__ T breakpoint_tau(const T (&v)[MAXM], int M, T C, BP bp_of, int& k_hi) {
  T t_lo = -Lim<T>::inf(), t_hi = Lim<T>::inf(), bp_min = Lim<T>::inf();
  bool found_lo = false;
  int k = 0;
#pragma unroll 1
  for (int j = 0; j < 2 * M; ++j) {
    const T bp = j < M ? bp_of(j) : bp_of(j - M) - C;
    T phi = 0;
#pragma unroll
    for (int i = 0; i < MAXM; ++i)
      if (i < M) phi += clampc(v[i] - bp, C);
    if (phi >= T(1)) {
      found_lo = true;
      t_lo = max(t_lo, bp);
    }
    if (phi <= T(1) && bp < t_hi) {
      t_hi = bp;
      k = j;
    }
    bp_min = min(bp_min, bp);
  }
  k_hi = k < M ? k : k - M;
  if (!found_lo) t_lo = bp_min;
  T phi_lo = 0, phi_hi = 0;
#pragma unroll
  for (int i = 0; i < MAXM; ++i) {
    if (i < M) {
      phi_lo += clampc(v[i] - t_lo, C);
      phi_hi += clampc(v[i] - t_hi, C);
    }
  }
  const T den = phi_lo - phi_hi;
  const T frac = den > T(0) ? (phi_lo - T(1)) / den : T(0);
  return frac > T(0) ? t_lo + frac * (t_hi - t_lo) : t_lo;  // frac = 0: t_hi may be far (no 0 * inf)
}

// Project v[0..M) in place. orig(j) must return the original value of coordinate j (v's initial content).
// Pass 1 shifts by the row max and brackets tau; pass 2 shifts by the coordinate owning the bracket's upper
// breakpoint and solves again; a Newton step on the free set makes sum x = 1 to rounding; rows whose sum
// still misses 1 by more than M ulp are repaired in order (see _project_rows in sdkd/ops/capped_simplex/).
template <typename T, int MAXM, typename ORIG>
__device__ __forceinline__ void project_inplace(T (&v)[MAXM], int M, T C, ORIG orig) {
  T m = -Lim<T>::inf();
#pragma unroll
  for (int i = 0; i < MAXM; ++i)
    if (i < M) m = max(m, v[i]);
#pragma unroll
  for (int i = 0; i < MAXM; ++i)
    if (i < M) v[i] = shifted(v[i], m);
  int a = 0;
  breakpoint_tau<T, MAXM>(v, M, C, [&](int j) { return shifted(orig(j), m); }, a);
  const T ya = orig(a);
#pragma unroll
  for (int i = 0; i < MAXM; ++i)
    if (i < M) v[i] = shifted(orig(i), ya);
  T tau = breakpoint_tau<T, MAXM>(v, M, C, [&](int j) { return shifted(orig(j), ya); }, a);
  T s = 0, nfree = 0;
#pragma unroll
  for (int i = 0; i < MAXM; ++i) {
    if (i < M) {
      const T xi = clampc(v[i] - tau, C);
      s += xi;
      nfree += (xi > T(0) && xi < C) ? T(1) : T(0);
    }
  }
  tau = nfree > T(0) ? tau + (s - T(1)) / nfree : tau;
  s = 0;
#pragma unroll
  for (int i = 0; i < MAXM; ++i) {
    if (i < M) {
      v[i] = clampc(v[i] - tau, C);
      s += v[i];
    }
  }
  T r = T(1) - s;
  if (fabs(r) > static_cast<T>(M) * Lim<T>::eps()) {
#pragma unroll
    for (int i = 0; i < MAXM; ++i) {
      if (i < M) {
        if (r > T(0)) {
          const T add = min(C - v[i], r);
          v[i] = min(v[i] + add, C);
          r -= add;
        } else {
          const T sub = min(v[i], -r);
          v[i] = max(v[i] - sub, T(0));
          r += sub;
        }
      }
    }
  }
}

template <typename T, int MAXM>
__global__ void project_kernel(const T* __restrict__ y, T* __restrict__ x, int64_t rows, int M, T C) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* yr = y + r * M;
  T v[MAXM];
#pragma unroll
  for (int i = 0; i < MAXM; ++i)
    if (i < M) v[i] = yr[i];
  project_inplace<T, MAXM>(v, M, C, [yr](int j) { return __ldg(yr + j); });
  T* xr = x + r * M;
#pragma unroll
  for (int i = 0; i < MAXM; ++i)
    if (i < M) xr[i] = v[i];
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ gy, int64_t rows,
                                int M, T C) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const T* xr = x + r * M;
  const T* gr = g + r * M;
  T sum = 0;
  int cnt = 0;
  for (int i = 0; i < M; ++i) {
    const T xi = xr[i];
    if (xi > T(0) && xi < C) {
      sum += gr[i];
      ++cnt;
    }
  }
  const T mean = sum / static_cast<T>(cnt > 1 ? cnt : 1);
  for (int i = 0; i < M; ++i) {
    const T xi = xr[i];
    gy[r * M + i] = (xi > T(0) && xi < C) ? gr[i] - mean : T(0);
  }
}

// ----------------------------------------------------------------------------- A2D
// out = P(a - (A a + b)), returns max |out - a|. Local arrays (one problem per thread).
template <typename T, int MAXM>
__device__ T pg_step(const T* A, const T* b, const T* a, T* out, int M, T C) {
  T v[MAXM];
  for (int i = 0; i < M; ++i) {
    T s = 0;
    for (int j = 0; j < M; ++j) s += A[i * M + j] * a[j];
    v[i] = a[i] - (s + b[i]);
  }
  T u[MAXM];  // the unprojected copy (orig)
  for (int i = 0; i < M; ++i) u[i] = v[i];
  project_inplace<T, MAXM>(v, M, C, [&u](int j) { return u[j]; });
  T r = 0;
  for (int i = 0; i < M; ++i) {
    out[i] = v[i];
    r = max(r, fabs(v[i] - a[i]));
  }
  return r;
}

template <typename T, int MAXM>
__global__ void a2d_kernel(const T* __restrict__ Gall, T* __restrict__ alpha, T* __restrict__ res, int64_t B, int M,
                           T C, int max_iter, T tol) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= B) return;
  const T* G = Gall + p * M * M;
  T* out = alpha + p * M;
  if (M == 1) {
    out[0] = T(1);
    res[p] = T(0);
    return;
  }
  T A[MAXM * MAXM], b[MAXM], x[MAXM], y[MAXM], xn[MAXM], z[MAXM], r_[MAXM];
  // normalise: A = P G P / L, b = P G 1 / (M L) of G / max diag (see the C++ file)
  T d = G[0];
  for (int i = 1; i < M; ++i) d = max(d, G[i * M + i]);
  if (!(d > T(0))) d = T(1);
  for (int i = 0; i < M; ++i) {
    T s = 0;
    for (int j = 0; j < M; ++j) {
      const T gij = (T(0.5) * (G[i * M + j] + G[j * M + i])) / d;
      A[i * M + j] = gij;
      s += gij;
    }
    r_[i] = s / static_cast<T>(M);
  }
  T s = 0;
  for (int i = 0; i < M; ++i) s += r_[i];
  s /= static_cast<T>(M);
  T tr = 0, rowmax = 0;
  for (int i = 0; i < M; ++i) {
    T rs = 0;
    for (int j = 0; j < M; ++j) {
      const T v = A[i * M + j] - r_[i] - r_[j] + s;
      A[i * M + j] = v;
      rs += fabs(v);
    }
    tr += A[i * M + i];
    rowmax = max(rowmax, rs);
    b[i] = r_[i] - s;
  }
  const T L = min(tr, rowmax);
  const T scale = L > T(16) * static_cast<T>(M) * Lim<T>::eps() ? T(1) / L : T(0);
  for (int i = 0; i < M * M; ++i) A[i] *= scale;
  for (int i = 0; i < M; ++i) b[i] *= scale;

  if (M == 2) {
    const T g11 = G[0], g22 = G[3], g12 = T(0.5) * (G[1] + G[2]);
    const T den = g11 - T(2) * g12 + g22;
    const bool ok = den > T(32) * Lim<T>::eps() * max(g11, g22);
    T a1 = ok ? (g22 - g12) / den : T(0.5);
    a1 = min(max(a1, max(T(1) - C, T(0))), min(C, T(1)));
    x[0] = a1;
    x[1] = T(1) - a1;
    const T r = pg_step<T, MAXM>(A, b, x, z, M, C);
    out[0] = x[0];
    out[1] = x[1];
    res[p] = r;
    return;
  }
  for (int i = 0; i < M; ++i) x[i] = y[i] = T(1) / static_cast<T>(M);
  T t = 1;
  T r = pg_step<T, MAXM>(A, b, x, z, M, C);
  for (int k = 0; k < max_iter && r > tol; ++k) {
    pg_step<T, MAXM>(A, b, y, xn, M, C);
    const T tn = T(0.5) * (T(1) + sqrt(T(1) + T(4) * t * t));
    T dot = 0;
    for (int i = 0; i < M; ++i) dot += (y[i] - xn[i]) * (xn[i] - x[i]);
    if (dot > T(0)) {
      for (int i = 0; i < M; ++i) y[i] = xn[i];
      t = T(1);
    } else {
      const T beta = (t - T(1)) / tn;
      for (int i = 0; i < M; ++i) y[i] = xn[i] + beta * (xn[i] - x[i]);
      t = tn;
    }
    for (int i = 0; i < M; ++i) x[i] = xn[i];
    r = pg_step<T, MAXM>(A, b, x, z, M, C);
  }
  for (int i = 0; i < M; ++i) out[i] = x[i];
  res[p] = r;
}

// Call launch(kernel) with the project_kernel instance for M (register arrays of the next size up).
template <typename T, typename Launch>
void dispatch_project(int M, Launch&& launch) {
  if (M <= 2)
    launch(project_kernel<T, 2>);
  else if (M <= 4)
    launch(project_kernel<T, 4>);
  else if (M <= 8)
    launch(project_kernel<T, 8>);
  else if (M <= 16)
    launch(project_kernel<T, 16>);
  else if (M <= 32)
    launch(project_kernel<T, 32>);
  else
    launch(project_kernel<T, 64>);
}

// Call launch(kernel) with the a2d_kernel instance for M.
template <typename T, typename Launch>
void dispatch_a2d(int M, Launch&& launch) {
  if (M <= 4)
    launch(a2d_kernel<T, 4>);
  else if (M <= 8)
    launch(a2d_kernel<T, 8>);
  else if (M <= 16)
    launch(a2d_kernel<T, 16>);
  else
    launch(a2d_kernel<T, 64>);
}

constexpr int kProjectThreads = 128;
constexpr int kBackwardThreads = 256;
constexpr int kA2dThreads = 64;

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace sdkd_capped_simplex_cuda
