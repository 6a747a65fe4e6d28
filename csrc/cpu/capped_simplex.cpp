// Capped-simplex projection and the A2D weight QP on the CPU (OpenMP over rows / problems).
//
// Projection of a row y (length M) onto {x : sum x = 1, 0 <= x <= C}: x = clip(y - tau, 0, C) with
// phi(tau) = sum clip(y_i - tau, 0, C) = 1. phi is piecewise linear with breakpoints {y_i, y_i - C};
// evaluating it at all 2M breakpoints and interpolating between the two that bracket 1 is exact.
// Rows are shifted by their max, then by the coordinate next to tau (shift equivariance), and a Newton step
// on the free set makes sum x = 1 to rounding for every finite input. Same arithmetic as the PyTorch reference
// in sdkd/ops/capped_simplex/, which documents the A2D solver (FISTA with gradient restart on the
// centred, curvature-normalised Gram matrix; closed form for M = 2).
// Torch-free: raw pointers to contiguous buffers; Python checks device, dtype, shape and values.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#ifdef SDKD_WITH_CUDA
#include "cuda/capped_simplex.h"
#include "sdkd_cuda.h"
#endif

namespace py = pybind11;

namespace {

constexpr int kMaxM = 64;

template <typename T>
inline T clampc(T v, T C) {
  return std::min(std::max(v, T(0)), C);
}

// tau with phi(tau) = sum clip(ws_i - tau, 0, C) = 1 for finite ws[0..M), and in *k_hi the coordinate owning the
// bracket's upper breakpoint (ws_j or ws_j - C, the first such j). MM > 0 fixes M at compile time (fully
// unrolled loops); selects are branch-free (phi >= 1 is unpredictable on random data).
template <typename T, int MM = 0>
inline T breakpoint_tau(const T* ws, int M_, T C, int* k_hi) {
  const int M = MM > 0 ? MM : M_;
  constexpr T inf = std::numeric_limits<T>::infinity();
  // phi at every breakpoint; the loop over breakpoints is innermost so that it vectorises (each
  // phi[j] is still summed over i in order, as in the other backends).
  T bp[2 * kMaxM], phi[2 * kMaxM];
  for (int j = 0; j < M; ++j) {
    bp[j] = ws[j];
    bp[j + M] = ws[j] - C;
  }
  for (int j = 0; j < 2 * M; ++j) phi[j] = 0;
  for (int i = 0; i < M; ++i) {
    const T yi = ws[i];
    for (int j = 0; j < 2 * M; ++j) phi[j] += clampc(yi - bp[j], C);
  }
  T t_lo = -inf, t_hi = inf, bp_min = inf;
  int k = 0;
  for (int j = 0; j < 2 * M; ++j) {
    t_lo = phi[j] >= T(1) ? std::max(t_lo, bp[j]) : t_lo;
    const bool lower = phi[j] <= T(1) && bp[j] < t_hi;
    k = lower ? j : k;
    t_hi = lower ? bp[j] : t_hi;
    bp_min = std::min(bp_min, bp[j]);
  }
  *k_hi = k < M ? k : k - M;
  t_lo = t_lo == -inf ? bp_min : t_lo;  // no breakpoint with phi >= 1: only through rounding at extreme scales
  T phi_lo = 0, phi_hi = 0;
  for (int i = 0; i < M; ++i) {
    phi_lo += clampc(ws[i] - t_lo, C);
    phi_hi += clampc(ws[i] - t_hi, C);
  }
  const T den = phi_lo - phi_hi;
  const T frac = den > T(0) ? (phi_lo - T(1)) / den : T(0);
  return frac > T(0) ? t_lo + frac * (t_hi - t_lo) : t_lo;  // frac = 0: t_hi may be far (no 0 * inf)
}

template <typename T>
inline T shifted(T y, T s) {
  return std::min(std::max(y - s, -std::numeric_limits<T>::max()), std::numeric_limits<T>::max());
}

// Rows whose sum misses 1 by more than M ulp (entries at three or more scales too far apart for two
// shifts) get the residual added to / taken from their entries in order, within bounds: feasible.
template <typename T>
inline void repair_sum(T* x, int M, T C) {
  T s = 0;
  for (int i = 0; i < M; ++i) s += x[i];
  T r = T(1) - s;
  if (!(std::abs(r) > static_cast<T>(M) * std::numeric_limits<T>::epsilon())) return;
  for (int i = 0; i < M; ++i) {
    if (r > T(0)) {
      const T add = std::min(C - x[i], r);
      x[i] = std::min(x[i] + add, C);
      r -= add;
    } else {
      const T sub = std::min(x[i], -r);
      x[i] = std::max(x[i] - sub, T(0));
      r += sub;
    }
  }
}

// Project the row y into x (x may alias y). Pass 1 shifts by the row max and brackets tau; pass 2 shifts by
// the coordinate owning the bracket's upper breakpoint (next to the true tau, where entries far below the
// max are still apart) and solves again; a Newton step on the free set makes sum x = 1 to rounding (see
// _project_rows in sdkd/ops/capped_simplex/).
template <typename T, int MM = 0>
inline void project_row(const T* y, T* x, int M_, T C) {
  const int M = MM > 0 ? MM : M_;
  T ws[kMaxM];
  T m = y[0];
  for (int i = 1; i < M; ++i) m = std::max(m, y[i]);
  for (int i = 0; i < M; ++i) ws[i] = shifted(y[i], m);
  int a = 0;
  breakpoint_tau<T, MM>(ws, M, C, &a);
  const T ya = y[a];
  for (int i = 0; i < M; ++i) ws[i] = shifted(y[i], ya);
  T tau = breakpoint_tau<T, MM>(ws, M, C, &a);
  T s = 0, nfree = 0;
  for (int i = 0; i < M; ++i) {
    const T xi = clampc(ws[i] - tau, C);
    s += xi;
    nfree += (xi > T(0) && xi < C) ? T(1) : T(0);
  }
  tau = nfree > T(0) ? tau + (s - T(1)) / nfree : tau;
  for (int i = 0; i < M; ++i) x[i] = clampc(ws[i] - tau, C);
  repair_sum(x, M, C);
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
// AVX2/FMA clone picked at load time on CPUs that have it (portable binary, no -march=native).
#define SDKD_CS_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SDKD_CS_CLONES
#endif

#if defined(__GNUC__)
#define SDKD_CS_BLOCKED 1
#define SDKD_CS_INLINE inline __attribute__((always_inline))

// 32-byte vector of T (GCC/clang vector extension): 8 floats or 4 doubles, one lane per row. One AVX2
// register in the v3 clone, two SSE2 registers in the default one.
template <typename T>
struct Vec32 {
  typedef T type __attribute__((vector_size(32)));
};

// Project the R = 32 / sizeof(T) consecutive rows of y (row-major, M = MM) at once, one row per lane,
// so that every step is vectorised across rows (for small M the per-row kernel leaves most SIMD lanes
// idle). Each lane performs exactly the operations of project_row in the same order (phi at each
// breakpoint summed over i in order; std::max(a, b) is written a < b ? b : a, std::min(a, b) is
// b < a ? b : a), so the results are bit-identical to it. Always inlined, so that it is compiled
// once per target clone (with the same FMA contraction of tau as breakpoint_tau in the v3 clone).
template <typename T, int MM>
SDKD_CS_INLINE void project_block(const T* y, T* x, T C) {
  using V = typename Vec32<T>::type;
  constexpr int M = MM;
  constexpr int R = 32 / sizeof(T);
  const V zero = V{}, one = zero + T(1), Cv = zero + C;
  const V inf = zero + std::numeric_limits<T>::infinity(), lowest = zero - std::numeric_limits<T>::max();
  auto clampv = [&](V v) __attribute__((always_inline)) {
    const V a = v < zero ? zero : v;
    return Cv < a ? Cv : a;
  };
  const V big = zero + std::numeric_limits<T>::max();
  auto shiftv = [&](V v, V by) __attribute__((always_inline)) {
    const V d = v - by;
    const V lo = d < lowest ? lowest : d;
    return big < lo ? big : lo;
  };
  V yo[M] = {}, ws[M];
  for (int i = 0; i < M; ++i)
    for (int r = 0; r < R; ++r) yo[i][r] = y[r * M + i];
  // breakpoint_tau on every lane; ya gets the value of yo at the owner of the upper breakpoint
  auto tau_of = [&](V& ya) __attribute__((always_inline)) {
    // Breakpoints in the order of breakpoint_tau: bp[j] = ws[j], then bp[j + M] = ws[j] - C.
    V t_lo = -inf, t_hi = inf, bp_min = inf;
    for (int j = 0; j < 2 * M; ++j) {
      const V bp = j < M ? ws[j] : ws[j - M] - Cv;
      V phi = zero;
      for (int i = 0; i < M; ++i) phi += clampv(ws[i] - bp);
      t_lo = phi >= one ? (t_lo < bp ? bp : t_lo) : t_lo;
      const auto lower = (phi <= one) & (bp < t_hi);
      ya = lower ? yo[j < M ? j : j - M] : ya;
      t_hi = lower ? bp : t_hi;
      bp_min = bp < bp_min ? bp : bp_min;
    }
    t_lo = t_lo == -inf ? bp_min : t_lo;
    V phi_lo = zero, phi_hi = zero;
    for (int i = 0; i < M; ++i) {
      phi_lo += clampv(ws[i] - t_lo);
      phi_hi += clampv(ws[i] - t_hi);
    }
    const V den = phi_lo - phi_hi;
    const V frac = den > zero ? (phi_lo - one) / den : zero;
    return frac > zero ? t_lo + frac * (t_hi - t_lo) : t_lo;
  };
  V m = yo[0];
  for (int i = 1; i < M; ++i) m = m < yo[i] ? yo[i] : m;
  for (int i = 0; i < M; ++i) ws[i] = shiftv(yo[i], m);
  V ya = yo[0];
  tau_of(ya);
  for (int i = 0; i < M; ++i) ws[i] = shiftv(yo[i], ya);
  V unused = ya;
  V tau = tau_of(unused);
  V s = zero, nfree = zero;
  for (int i = 0; i < M; ++i) {
    const V xi = clampv(ws[i] - tau);
    s += xi;
    nfree += ((xi > zero) & (xi < Cv)) ? one : zero;
  }
  tau = nfree > zero ? tau + (s - one) / nfree : tau;
  for (int r = 0; r < R; ++r) {
    T* xr = x + r * M;
    for (int i = 0; i < M; ++i) {
      const V xi = clampv(ws[i] - tau);
      xr[i] = xi[r];
    }
    repair_sum(xr, M, C);
  }
}
#else
#define SDKD_CS_BLOCKED 0
#endif

template <typename T, int MM>
SDKD_CS_CLONES void project_rows(const T* y, T* x, int64_t rows, int M, T C) {
#if SDKD_CS_BLOCKED
  if constexpr (MM > 0 && MM <= 16) {
    constexpr int64_t R = 32 / sizeof(T);
    const int64_t blocks = rows / R;
#pragma omp parallel for schedule(static) if (rows * M * M > 16384)
    for (int64_t b = 0; b < blocks; ++b) project_block<T, MM>(y + b * R * M, x + b * R * M, C);
    for (int64_t r = blocks * R; r < rows; ++r) project_row<T, MM>(y + r * M, x + r * M, M, C);  // same results
    return;
  }
#endif
#pragma omp parallel for schedule(static) if (rows * M * M > 16384)
  for (int64_t r = 0; r < rows; ++r) project_row<T, MM>(y + r * M, x + r * M, M, C);
}

template <typename T>
void project(uintptr_t y_ptr, uintptr_t x_ptr, int64_t rows, int64_t M, double C) {
  const T* y = reinterpret_cast<const T*>(y_ptr);
  T* x = reinterpret_cast<T*>(x_ptr);
  const T c = static_cast<T>(C);
  py::gil_scoped_release nogil;
  const int m = static_cast<int>(M);
  switch (m) {
    case 2: return project_rows<T, 2>(y, x, rows, m, c);
    case 3: return project_rows<T, 3>(y, x, rows, m, c);
    case 4: return project_rows<T, 4>(y, x, rows, m, c);
    case 8: return project_rows<T, 8>(y, x, rows, m, c);
    case 16: return project_rows<T, 16>(y, x, rows, m, c);
    default: return project_rows<T, 0>(y, x, rows, m, c);
  }
}

template <typename T>
void backward(uintptr_t x_ptr, uintptr_t g_ptr, uintptr_t gy_ptr, int64_t rows, int64_t M, double C) {
  const T* x = reinterpret_cast<const T*>(x_ptr);
  const T* g = reinterpret_cast<const T*>(g_ptr);
  T* gy = reinterpret_cast<T*>(gy_ptr);
  const T c = static_cast<T>(C);
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (rows * M > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * M;
    const T* gr = g + r * M;
    T* out = gy + r * M;
    T sum = 0;
    int64_t cnt = 0;
    for (int64_t i = 0; i < M; ++i) {
      if (xr[i] > T(0) && xr[i] < c) {
        sum += gr[i];
        ++cnt;
      }
    }
    const T mean = sum / static_cast<T>(std::max<int64_t>(cnt, 1));
    for (int64_t i = 0; i < M; ++i) out[i] = (xr[i] > T(0) && xr[i] < c) ? gr[i] - mean : T(0);
  }
}

// ----------------------------------------------------------------------------- A2D
// Scale-free QP data for one problem: A = P G P / L, b = P G 1 / (M L) (see normalise_gram in Python).
template <typename T, int MM = 0>
void normalise(const T* G, T* A, T* b, int M_) {
  const int M = MM > 0 ? MM : M_;
  T d = G[0];
  for (int i = 1; i < M; ++i) d = std::max(d, G[i * M + i]);
  if (!(d > T(0))) d = T(1);
  T r[kMaxM];
  for (int i = 0; i < M; ++i) {
    T s = 0;
    for (int j = 0; j < M; ++j) {
      const T gij = (T(0.5) * (G[i * M + j] + G[j * M + i])) / d;
      A[i * M + j] = gij;
      s += gij;
    }
    r[i] = s / static_cast<T>(M);
  }
  T s = 0;
  for (int i = 0; i < M; ++i) s += r[i];
  s /= static_cast<T>(M);
  T tr = 0, rowmax = 0;
  for (int i = 0; i < M; ++i) {
    T rs = 0;
    for (int j = 0; j < M; ++j) {
      T v = A[i * M + j] - r[i] - r[j] + s;
      A[i * M + j] = v;
      rs += std::abs(v);
    }
    tr += A[i * M + i];
    rowmax = std::max(rowmax, rs);
    b[i] = r[i] - s;
  }
  T L = std::min(tr, rowmax);
  const bool ok = L > T(16) * static_cast<T>(M) * std::numeric_limits<T>::epsilon();
  const T scale = ok ? T(1) / L : T(0);
  for (int i = 0; i < M * M; ++i) A[i] *= scale;
  for (int i = 0; i < M; ++i) b[i] *= scale;
}

// out = P(a - (A a + b)); returns max |out - a|. MM > 0 fixes M at compile time (same arithmetic).
template <typename T, int MM = 0>
T pg_step(const T* A, const T* b, const T* a, T* out, int M_, T C, T* work) {
  const int M = MM > 0 ? MM : M_;
  for (int i = 0; i < M; ++i) {
    T s = 0;
    for (int j = 0; j < M; ++j) s += A[i * M + j] * a[j];
    work[i] = a[i] - (s + b[i]);
  }
  project_row<T, MM>(work, out, M, C);
  T r = 0;
  for (int i = 0; i < M; ++i) r = std::max(r, std::abs(out[i] - a[i]));
  return r;
}

template <typename T>
void a2d_one(const T* G, T* alpha, T* res, int M, T C, int max_iter, T tol) {
  if (M == 1) {
    alpha[0] = T(1);
    *res = T(0);
    return;
  }
  T A[kMaxM * kMaxM], b[kMaxM], x[kMaxM], y[kMaxM], xn[kMaxM], z[kMaxM], w[kMaxM];
  if (M == 2) {
    normalise<T, 2>(G, A, b, M);
    const T g11 = G[0], g22 = G[3], g12 = T(0.5) * (G[1] + G[2]);
    const T den = g11 - T(2) * g12 + g22;
    const bool ok = den > T(32) * std::numeric_limits<T>::epsilon() * std::max(g11, g22);
    T a1 = ok ? (g22 - g12) / den : T(0.5);
    a1 = std::min(std::max(a1, std::max(T(1) - C, T(0))), std::min(C, T(1)));
    alpha[0] = a1;
    alpha[1] = T(1) - a1;
    *res = pg_step<T, 2>(A, b, alpha, z, M, C, w);
    return;
  }
  normalise(G, A, b, M);
  for (int i = 0; i < M; ++i) x[i] = y[i] = T(1) / static_cast<T>(M);
  T t = 1;
  T r = pg_step(A, b, x, z, M, C, w);
  for (int k = 0; k < max_iter && r > tol; ++k) {
    pg_step(A, b, y, xn, M, C, w);
    const T tn = T(0.5) * (T(1) + std::sqrt(T(1) + T(4) * t * t));
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
    r = pg_step(A, b, x, z, M, C, w);
  }
  for (int i = 0; i < M; ++i) alpha[i] = x[i];
  *res = r;
}

template <typename T>
void a2d_solve(uintptr_t G_ptr, uintptr_t alpha_ptr, uintptr_t res_ptr, int64_t B, int64_t M, double C,
               int64_t max_iter, double tol) {
  const T* G = reinterpret_cast<const T*>(G_ptr);
  T* alpha = reinterpret_cast<T*>(alpha_ptr);
  T* res = reinterpret_cast<T*>(res_ptr);
  py::gil_scoped_release nogil;
  const int it = static_cast<int>(std::min<int64_t>(max_iter, 1 << 30));
  if (M <= 2) {  // closed form, uniform cost (~0.1 us a problem): static split, only for large batches
#pragma omp parallel for schedule(static) if (B >= 2048)
    for (int64_t p = 0; p < B; ++p)
      a2d_one(G + p * M * M, alpha + p * M, res + p, static_cast<int>(M), static_cast<T>(C), it, static_cast<T>(tol));
    return;
  }
#pragma omp parallel for schedule(dynamic, 4) if (B * M * M >= 16384)
  for (int64_t p = 0; p < B; ++p)
    a2d_one(G + p * M * M, alpha + p * M, res + p, static_cast<int>(M), static_cast<T>(C), it, static_cast<T>(tol));
}

void check_m(int64_t M) {
  if (M < 1 || M > kMaxM) throw std::invalid_argument("capped_simplex: M must be in [1, 64]");
}

template <typename T>
void project_checked(uintptr_t y, uintptr_t x, int64_t rows, int64_t M, double C) {
  check_m(M);
  project<T>(y, x, rows, M, C);
}

template <typename T>
void a2d_checked(uintptr_t G, uintptr_t a, uintptr_t r, int64_t B, int64_t M, double C, int64_t it, double tol) {
  check_m(M);
  a2d_solve<T>(G, a, r, B, M, C, it, tol);
}

}  // namespace

void register_capped_simplex(py::module_& m) {
  const char* proj = "Project rows of a contiguous (rows, M) buffer y into x onto {sum x = 1, 0 <= x <= C}, M <= 64.";
  m.def("capped_simplex_project_f32", &project_checked<float>, proj, py::arg("y"), py::arg("x"), py::arg("rows"),
        py::arg("M"), py::arg("C"));
  m.def("capped_simplex_project_f64", &project_checked<double>, proj, py::arg("y"), py::arg("x"), py::arg("rows"),
        py::arg("M"), py::arg("C"));
  const char* bwd = "Closed-form VJP: gy = g - mean_F(g) on F = {0 < x < C}, 0 elsewhere (contiguous (rows, M)).";
  m.def("capped_simplex_backward_f32", &backward<float>, bwd, py::arg("x"), py::arg("g"), py::arg("gy"),
        py::arg("rows"), py::arg("M"), py::arg("C"));
  m.def("capped_simplex_backward_f64", &backward<double>, bwd, py::arg("x"), py::arg("g"), py::arg("gy"),
        py::arg("rows"), py::arg("M"), py::arg("C"));
  const char* a2d = "A2D weights: min 1/2 a^T G a on the capped simplex for each (M, M) G of a contiguous (B, M, M) "
                    "buffer; writes alpha (B, M) and the KKT residual (B,).";
  m.def("a2d_solve_f32", &a2d_checked<float>, a2d, py::arg("G"), py::arg("alpha"), py::arg("res"), py::arg("B"),
        py::arg("M"), py::arg("C"), py::arg("max_iter"), py::arg("tol"));
  m.def("a2d_solve_f64", &a2d_checked<double>, a2d, py::arg("G"), py::arg("alpha"), py::arg("res"), py::arg("B"),
        py::arg("M"), py::arg("C"), py::arg("max_iter"), py::arg("tol"));
#ifdef SDKD_WITH_CUDA
  auto cu = [](int err, const char* what) { sdkd_cuda_check(err, what); };
  m.def(
      "capped_simplex_project_cuda_f32",
      [cu](uintptr_t y, uintptr_t x, int64_t rows, int64_t M, double C, uintptr_t stream) {
        check_m(M);
        cu(sdkd_capped_simplex_project_cuda(reinterpret_cast<const void*>(y), reinterpret_cast<void*>(x), 0, rows, M,
                                            C, reinterpret_cast<void*>(stream)),
           "capped_simplex_project_cuda");
      },
      py::arg("y"), py::arg("x"), py::arg("rows"), py::arg("M"), py::arg("C"), py::arg("stream"));
  m.def(
      "capped_simplex_project_cuda_f64",
      [cu](uintptr_t y, uintptr_t x, int64_t rows, int64_t M, double C, uintptr_t stream) {
        check_m(M);
        cu(sdkd_capped_simplex_project_cuda(reinterpret_cast<const void*>(y), reinterpret_cast<void*>(x), 1, rows, M,
                                            C, reinterpret_cast<void*>(stream)),
           "capped_simplex_project_cuda");
      },
      py::arg("y"), py::arg("x"), py::arg("rows"), py::arg("M"), py::arg("C"), py::arg("stream"));
  m.def(
      "capped_simplex_backward_cuda_f32",
      [cu](uintptr_t x, uintptr_t g, uintptr_t gy, int64_t rows, int64_t M, double C, uintptr_t stream) {
        cu(sdkd_capped_simplex_backward_cuda(reinterpret_cast<const void*>(x), reinterpret_cast<const void*>(g),
                                             reinterpret_cast<void*>(gy), 0, rows, M, C,
                                             reinterpret_cast<void*>(stream)),
           "capped_simplex_backward_cuda");
      },
      py::arg("x"), py::arg("g"), py::arg("gy"), py::arg("rows"), py::arg("M"), py::arg("C"), py::arg("stream"));
  m.def(
      "capped_simplex_backward_cuda_f64",
      [cu](uintptr_t x, uintptr_t g, uintptr_t gy, int64_t rows, int64_t M, double C, uintptr_t stream) {
        cu(sdkd_capped_simplex_backward_cuda(reinterpret_cast<const void*>(x), reinterpret_cast<const void*>(g),
                                             reinterpret_cast<void*>(gy), 1, rows, M, C,
                                             reinterpret_cast<void*>(stream)),
           "capped_simplex_backward_cuda");
      },
      py::arg("x"), py::arg("g"), py::arg("gy"), py::arg("rows"), py::arg("M"), py::arg("C"), py::arg("stream"));
  m.def(
      "a2d_solve_cuda_f32",
      [cu](uintptr_t G, uintptr_t a, uintptr_t r, int64_t B, int64_t M, double C, int64_t it, double tol,
           uintptr_t stream) {
        check_m(M);
        cu(sdkd_a2d_solve_cuda(reinterpret_cast<const void*>(G), reinterpret_cast<void*>(a),
                               reinterpret_cast<void*>(r), 0, B, M, C, it, tol, reinterpret_cast<void*>(stream)),
           "a2d_solve_cuda");
      },
      py::arg("G"), py::arg("alpha"), py::arg("res"), py::arg("B"), py::arg("M"), py::arg("C"), py::arg("max_iter"),
      py::arg("tol"), py::arg("stream"));
  m.def(
      "a2d_solve_cuda_f64",
      [cu](uintptr_t G, uintptr_t a, uintptr_t r, int64_t B, int64_t M, double C, int64_t it, double tol,
           uintptr_t stream) {
        check_m(M);
        cu(sdkd_a2d_solve_cuda(reinterpret_cast<const void*>(G), reinterpret_cast<void*>(a),
                               reinterpret_cast<void*>(r), 1, B, M, C, it, tol, reinterpret_cast<void*>(stream)),
           "a2d_solve_cuda");
      },
      py::arg("G"), py::arg("alpha"), py::arg("res"), py::arg("B"), py::arg("M"), py::arg("C"), py::arg("max_iter"),
      py::arg("tol"), py::arg("stream"));
#endif
}
