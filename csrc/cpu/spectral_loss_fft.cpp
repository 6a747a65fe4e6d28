// Fused SpectralKD loss on the CPU for any H and any W >= 8: band energies and the gradient from
// real FFTs computed here, in one pass per (H, W) slice (OpenMP over slices).
//
// Why not the truncated-DFT box of spectral_loss.cpp: at 64x64 the box needs ~9x the arithmetic of an FFT.
// Why not call pocketfft through torch: the reference already does, and pays for three transforms (its
// autograd runs a full complex FFT backwards), many elementwise passes and their memory traffic.
//
// Layout: every transform runs on L independent signals at once, one SIMD vector per complex point
// ("vertical" FFT: no shuffles inside butterflies). Per slice x = s - t:
//   1. rows: pairs of real rows packed as a + i b, L pairs per FFT of length W; unpacked to the kx < Kc
//      columns the bands need (Kc from the Python plan: every bin with kx >= Kc is in the last band);
//   2. columns: FFT of length H over those Kc columns (lanes = columns) -> D, ortho-scaled;
//      energies of the bands below the last from D (weights w(kx) for "mean", 1 for "band_mean"). A column
//      block whose low-band bins lie in a few rows (the block holding the cutoff's column) takes a direct DFT
//      over those rows instead of a forward and an inverse FFT;
//   3. inverse: masked (and, with > 2 bands, gain-weighted) spectra back through an inverse column FFT and
//      an inverse row FFT (two Hermitian rows per complex transform) -> x_low = sum_{b<last} P_b x;
//   4. per group of inverse-transformed rows, at once: the last band is the energy of the spatial residual
//      z = x - x_low (never total - low: that cancels badly); the gradient is
//      2 V(c_last x + sum_{b<last} (c_b - c_last) P_b x), V as in spectral_loss.cpp ("mean": identity;
//      "band_mean": row-mean and Nyquist-column parts), written with streaming stores a cache line at a time.
// Transforms: powers of two take a radix-8 first pass that reads its input in natural order (the bit reversal costs
// nothing), then pairs of radix-2 stages. Other lengths whose prime factors are all <= 13 (480 = 4*4*2*3*5,
// 121 = 11*11, 240, ...) take a mixed-radix Stockham transform (self-sorting: natural order in and out, ping-pong
// between the output and a per-thread scratch, one pass per factor; radix 2 and 4 as above, odd radices
// 3/5/7/11/13 with their symmetric butterflies); a length with a larger prime factor takes Bluestein's algorithm
// (a chirp convolution through a power-of-two transform), as pocketfft and FFTW do.
// The next slice's inputs are prefetched during the forward row pass.
// fp32 inputs compute in fp32 (energies summed in fp32 vectors per column block or row group, then in fp64),
// fp64 inputs in fp64.
#include <pybind11/pybind11.h>

#include "cpu/target_clones.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace py = pybind11;

// Vector-typed helpers are always inlined; the ABI note about returning vectors does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
// Butterflies as fused multiply-adds where the CPU has them (ISO C++ mode turns contraction off).
#pragma GCC optimize("fp-contract=fast", "no-gcse-after-reload", "no-gcse")

namespace {

constexpr int L = 8;  // signals per transform (one vector of 8 lanes)

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(64)));
};

// Zero-initialised, 64-byte aligned array of vectors (std::vector drops the vector type's alignment).
template <typename VT>
class Buf {
 public:
  Buf() = default;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { std::free(p_); }
  void resize(size_t n) {
    std::free(p_);
    const size_t bytes = std::max<size_t>(64, (n * sizeof(VT) + 63) / 64 * 64);
    p_ = static_cast<VT*>(std::aligned_alloc(64, bytes));
    if (p_ == nullptr) throw std::bad_alloc();
    std::memset(static_cast<void*>(p_), 0, bytes);
  }
  VT* data() { return p_; }
  const VT* data() const { return p_; }
  VT& operator[](size_t i) { return p_[i]; }
  const VT& operator[](size_t i) const { return p_[i]; }

 private:
  VT* p_ = nullptr;
};

template <typename T>
static inline __attribute__((always_inline)) typename Vec<T>::type loadv(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
static inline __attribute__((always_inline)) void storev(T* p, const typename Vec<T>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}
// Largest prime factor the mixed-radix transform takes as a butterfly; a length with a larger one uses Bluestein.
constexpr int MAX_RADIX = 13;

// Radices of a mixed-radix length n, in pass order (4s first, then 2, then odd primes <= MAX_RADIX), or empty when
// n has a prime factor above MAX_RADIX.
inline std::vector<int> mixed_radices(int n) {
  std::vector<int> r;
  while (n % 4 == 0) r.push_back(4), n /= 4;
  if (n % 2 == 0) r.push_back(2), n /= 2;
  for (int p : {3, 5, 7, 11, 13})
    while (n % p == 0) r.push_back(p), n /= p;
  if (n != 1) r.clear();
  return r;
}

// Plain double-precision FFT of a power-of-two length (forward, in place), for building Bluestein's tables once
// per plan.
inline void fft_double(std::vector<double>& re, std::vector<double>& im) {
  const size_t n = re.size();
  for (size_t i = 1, j = 0; i < n; ++i) {
    size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(re[i], re[j]), std::swap(im[i], im[j]);
  }
  for (size_t len = 2; len <= n; len <<= 1) {
    const double a = -2.0 * M_PI / double(len);
    for (size_t i = 0; i < n; i += len)
      for (size_t k = 0; k < len / 2; ++k) {
        const double c = std::cos(a * double(k)), sn = std::sin(a * double(k));
        const size_t u = i + k, v = u + len / 2;
        const double xr = re[v] * c - im[v] * sn, xi = re[v] * sn + im[v] * c;
        re[v] = re[u] - xr, im[v] = im[u] - xi, re[u] += xr, im[u] += xi;
      }
  }
}

// Tables of one transform length n (forward sign e^{-2 pi i k / n}; inverses conjugate on the fly).
//   power of two: bit-reversal permutation and twiddles, k < n/2;
//   mixed radix: per pass, the twiddles w_len^{p u} (p < len / r, 1 <= u < r) and the radix's roots;
//   Bluestein: the chirp e^{-pi i j^2 / n} (j < n) and the spectrum of its conjugate, zero-padded to a power of
//   two M >= 2n - 1 (with its own power-of-two plan).
template <typename T>
struct Plan {
  int n = 1;
  bool pow2 = true;
  std::vector<int> rev;
  std::vector<T> wr, wi;
  std::vector<int> radix;                // mixed radix: the passes' radices
  std::vector<std::vector<T>> twr, twi;  // per pass
  std::vector<std::vector<T>> rc, rs;    // per pass: cos, sin(2 pi j / r), j < r
  std::vector<Plan<T>> sub;              // Bluestein: the power-of-two plan of length M (one element)
  std::vector<T> chr, chi;               // Bluestein: chirp, n
  std::vector<T> bfr, bfi;               // Bluestein: spectrum of conj(chirp) (forward; the inverse mirrors it), M
  explicit Plan(int n_) : n(n_), pow2(n_ >= 1 && (n_ & (n_ - 1)) == 0) {
    if (pow2) {
      rev.resize(n), wr.resize(std::max(1, n / 2)), wi.resize(std::max(1, n / 2));
      int bits = 0;
      while ((1 << bits) < n) ++bits;
      for (int i = 0; i < n; ++i) {
        int r = 0;
        for (int b = 0; b < bits; ++b) r |= ((i >> b) & 1) << (bits - 1 - b);
        rev[i] = r;
      }
      for (int k = 0; k < n / 2; ++k) {
        const double a = 2.0 * M_PI * double(k) / double(n);
        wr[k] = T(std::cos(a));
        wi[k] = T(-std::sin(a));
      }
      return;
    }
    radix = mixed_radices(n);
    if (!radix.empty()) {
      int len = n;
      for (int r : radix) {
        const int m = len / r;
        std::vector<T> tr(size_t(m) * (r - 1)), ti(size_t(m) * (r - 1)), c(r), sn(r);
        for (int p = 0; p < m; ++p)
          for (int u = 1; u < r; ++u) {
            const double a = 2.0 * M_PI * double((int64_t(p) * u) % len) / double(len);
            tr[size_t(p) * (r - 1) + u - 1] = T(std::cos(a)), ti[size_t(p) * (r - 1) + u - 1] = T(-std::sin(a));
          }
        for (int j = 0; j < r; ++j) c[j] = T(std::cos(2.0 * M_PI * j / r)), sn[j] = T(std::sin(2.0 * M_PI * j / r));
        twr.push_back(std::move(tr)), twi.push_back(std::move(ti)), rc.push_back(std::move(c)), rs.push_back(std::move(sn));
        len = m;
      }
      return;
    }
    int M = 1;
    while (M < 2 * n - 1) M <<= 1;
    sub.emplace_back(M);
    chr.resize(n), chi.resize(n);
    std::vector<double> br(M, 0.0), bi(M, 0.0);
    for (int j = 0; j < n; ++j) {
      const int64_t q = (int64_t(j) * j) % (2 * int64_t(n));  // e^{-pi i j^2 / n} has period 2n in j^2
      const double a = M_PI * double(q) / double(n);
      chr[j] = T(std::cos(a)), chi[j] = T(-std::sin(a));
      br[j] = std::cos(a), bi[j] = std::sin(a);  // conj(chirp)
      if (j > 0) br[M - j] = br[j], bi[M - j] = bi[j];
    }
    fft_double(br, bi);
    bfr.resize(M), bfi.resize(M);
    for (int k = 0; k < M; ++k) bfr[k] = T(br[k] / M), bfi[k] = T(bi[k] / M);  // 1/M of the inverse folded in
  }
};

// Butterflies on L signals at once. INV: e^{+2 pi i k / n} (unnormalised inverse).
// (c0, c1, c2, c3) -> their 4-point DFT, in place.
template <bool INV, typename VT>
static inline __attribute__((always_inline)) void dft4(VT& r0, VT& i0, VT& r1, VT& i1, VT& r2, VT& i2, VT& r3,
                                                       VT& i3) {
  const VT sr = r0 + r2, si = i0 + i2, dr = r0 - r2, di = i0 - i2;
  const VT tr = r1 + r3, ti = i1 + i3, er = r1 - r3, ei = i1 - i3;
  const VT fr = INV ? -ei : ei, fi = INV ? er : -er;  // (c1 - c3) * (-i) forward, * (+i) inverse
  r0 = sr + tr, i0 = si + ti, r2 = sr - tr, i2 = si - ti;
  r1 = dr + fr, i1 = di + fi, r3 = dr - fr, i3 = di - fi;
}

// First three DIT stages fused with the bit-reversal: for each block g of 8 outputs, the 8-point DFT of the
// natural-order points src[(b + m n/8) * stride], m < 8, b = rev(8 g) (stride in T elements, one VT per point).
template <bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void radix8_first(const Plan<T>& p, const T* __restrict sre,
                                                               const T* __restrict sim, int64_t stride,
                                                               VT* __restrict re, VT* __restrict im) {
  const int n = p.n, e = n / 8;
  const T h = T(0.70710678118654752440);
  for (int g = 0; g < e; ++g) {
    const int64_t b = p.rev[8 * g];
    VT ar[4], ai[4], br[4], bi[4];
    for (int m = 0; m < 4; ++m) {
      const VT ur = loadv(sre + (b + m * e) * stride), ui = loadv(sim + (b + m * e) * stride);
      const VT vr = loadv(sre + (b + (m + 4) * e) * stride), vi = loadv(sim + (b + (m + 4) * e) * stride);
      ar[m] = ur + vr, ai[m] = ui + vi, br[m] = ur - vr, bi[m] = ui - vi;
    }
    // b_m * w8^m, w8 = e^{-i pi/4} (forward) / e^{+i pi/4} (inverse)
    {
      const VT xr = br[1], xi = bi[1];
      br[1] = INV ? (xr - xi) * h : (xr + xi) * h;
      bi[1] = INV ? (xr + xi) * h : (xi - xr) * h;
      const VT yr = br[2], yi = bi[2];
      br[2] = INV ? -yi : yi;
      bi[2] = INV ? yr : -yr;
      const VT zr = br[3], zi = bi[3];
      br[3] = INV ? (-zr - zi) * h : (zi - zr) * h;
      bi[3] = INV ? (zr - zi) * h : (-zr - zi) * h;
    }
    dft4<INV>(ar[0], ai[0], ar[1], ai[1], ar[2], ai[2], ar[3], ai[3]);
    dft4<INV>(br[0], bi[0], br[1], bi[1], br[2], bi[2], br[3], bi[3]);
    VT* __restrict r = re + 8 * g;
    VT* __restrict q = im + 8 * g;
    for (int k = 0; k < 4; ++k) r[2 * k] = ar[k], q[2 * k] = ai[k], r[2 * k + 1] = br[k], q[2 * k + 1] = bi[k];
  }
}

// FFT of L signals of length n (a power of two) whose point m is src[m * stride] (natural order), into
// (re, im) in natural order. n >= 8: radix-8 first pass straight from src, then pairs of radix-2 stages
// (half the loads and stores of one stage per pass) and one radix-2 stage when an odd number is left.
template <bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void fft_pow2(const Plan<T>& p, const T* __restrict sre,
                                                      const T* __restrict sim, int64_t stride, VT* __restrict re,
                                                      VT* __restrict im) {
  const int n = p.n;
  int len;
  if (n >= 8) {
    radix8_first<INV>(p, sre, sim, stride, re, im);
    len = 16;
  } else {  // n = 1, 2, 4: bit-reversed copy, then one stage of 2 and one of 4
    for (int i = 0; i < n; ++i) re[i] = loadv(sre + p.rev[i] * stride), im[i] = loadv(sim + p.rev[i] * stride);
    if (n >= 2)
      for (int i = 0; i + 1 < n; i += 2) {
        const VT ar = re[i], ai = im[i], br = re[i + 1], bi = im[i + 1];
        re[i] = ar + br, im[i] = ai + bi, re[i + 1] = ar - br, im[i + 1] = ai - bi;
      }
    if (n == 4) {
      VT ar = re[0], ai = im[0], br = re[2], bi = im[2];
      re[0] = ar + br, im[0] = ai + bi, re[2] = ar - br, im[2] = ai - bi;
      ar = re[1], ai = im[1];
      const VT yr = INV ? -im[3] : im[3];
      const VT yi = INV ? re[3] : -re[3];
      re[1] = ar + yr, im[1] = ai + yi, re[3] = ar - yr, im[3] = ai - yi;
    }
    return;
  }
  for (; 2 * len <= n; len <<= 2) {  // stages len and 2 len: blocks of len / 2 -> len -> 2 len
    const int m = len >> 1, sa = n / len, sb = n / (2 * len);
    for (int i = 0; i < n; i += 2 * len) {
      for (int j = 0; j < m; ++j) {
        const T ca = p.wr[j * sa], xa = INV ? -p.wi[j * sa] : p.wi[j * sa];
        const T cb = p.wr[j * sb], xb = INV ? -p.wi[j * sb] : p.wi[j * sb];
        VT* __restrict r = re + i + j;
        VT* __restrict q = im + i + j;
        const VT x0r = r[0], x0i = q[0], x1r = r[m], x1i = q[m], x2r = r[2 * m], x2i = q[2 * m];
        const VT x3r = r[3 * m], x3i = q[3 * m];
        // stage len: (x0, x1) and (x2, x3) with twiddle a
        const VT t1r = x1r * ca - x1i * xa, t1i = x1r * xa + x1i * ca;
        const VT t3r = x3r * ca - x3i * xa, t3i = x3r * xa + x3i * ca;
        const VT y0r = x0r + t1r, y0i = x0i + t1i, y1r = x0r - t1r, y1i = x0i - t1i;
        const VT y2r = x2r + t3r, y2i = x2i + t3i, y3r = x2r - t3r, y3i = x2i - t3i;
        // stage 2 len: (y0, y2) with twiddle b, (y1, y3) with twiddle b * (-i) (forward) / b * i (inverse)
        const VT u2r = y2r * cb - y2i * xb, u2i = y2r * xb + y2i * cb;
        const VT v3r = y3r * cb - y3i * xb, v3i = y3r * xb + y3i * cb;
        const VT u3r = INV ? -v3i : v3i, u3i = INV ? v3r : -v3r;
        r[0] = y0r + u2r, q[0] = y0i + u2i, r[2 * m] = y0r - u2r, q[2 * m] = y0i - u2i;
        r[m] = y1r + u3r, q[m] = y1i + u3i, r[3 * m] = y1r - u3r, q[3 * m] = y1i - u3i;
      }
    }
  }
  if (len <= n) {  // one radix-2 stage left
    const int half = len >> 1, step = n / len;
    for (int i = 0; i < n; i += len) {
      for (int j = 0; j < half; ++j) {
        const T c = p.wr[j * step], s = INV ? -p.wi[j * step] : p.wi[j * step];
        VT* __restrict ar = re + i + j;
        VT* __restrict ai = im + i + j;
        VT* __restrict br = re + i + j + half;
        VT* __restrict bi = im + i + j + half;
        const VT yr = *br * c - *bi * s, yi = *br * s + *bi * c;
        const VT xr = *ar, xi = *ai;
        *ar = xr + yr, *ai = xi + yi, *br = xr - yr, *bi = xi - yi;
      }
    }
  }
}

// Per-thread scratch of at least n vectors (slot `which`), kept between calls: the mixed-radix passes ping-pong
// through it and Bluestein's convolution lives in it. Not inlined, so every CPU clone shares one set.
template <typename VT>
__attribute__((noinline)) VT* fft_scratch(int which, size_t n) {
  static thread_local Buf<VT> bufs[4];
  static thread_local size_t cap[4] = {0, 0, 0, 0};
  if (cap[which] < n) bufs[which].resize(n), cap[which] = n;
  return bufs[which].data();
}

// Odd-radix DFT of R points in place (R = 3, 5, ... 13), pairing points t and R - t:
// b_u = a_0 + sum_t cos(2 pi t u / R)(a_t + a_{R-t}) -/+ i sum_t sin(2 pi t u / R)(a_t - a_{R-t}), and b_{R-u} with
// the other sign. c, sn: cos and sin of 2 pi j / R.
template <int R, bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void dft_odd(VT* ar, VT* ai, const T* c, const T* sn) {
  constexpr int h = (R - 1) / 2;
  VT sr[h], si[h], dr[h], di[h];
  VT b0r = ar[0], b0i = ai[0];
  for (int t = 1; t <= h; ++t) {
    sr[t - 1] = ar[t] + ar[R - t], si[t - 1] = ai[t] + ai[R - t];
    dr[t - 1] = ar[t] - ar[R - t], di[t - 1] = ai[t] - ai[R - t];
    b0r += sr[t - 1], b0i += si[t - 1];
  }
  VT outr[R], outi[R];
  for (int u = 1; u <= h; ++u) {
    VT Ar = ar[0], Ai = ai[0], Br = {}, Bi = {};
    for (int t = 1; t <= h; ++t) {
      const int q = (t * u) % R;
      Ar += sr[t - 1] * c[q], Ai += si[t - 1] * c[q];
      Br += dr[t - 1] * sn[q], Bi += di[t - 1] * sn[q];
    }
    // forward: b_u = A - iB, b_{R-u} = A + iB; inverse: the other way round
    const VT pr = Ar + Bi, pi = Ai - Br, mr = Ar - Bi, mi = Ai + Br;
    outr[u] = INV ? mr : pr, outi[u] = INV ? mi : pi;
    outr[R - u] = INV ? pr : mr, outi[R - u] = INV ? pi : mi;
  }
  ar[0] = b0r, ai[0] = b0i;
  for (int u = 1; u < R; ++u) ar[u] = outr[u], ai[u] = outi[u];
}

// One self-sorting (Stockham) pass of radix R over sub-transforms of length len at stride s (s * len = n):
// y[q + s (R p + u)] = w_len^{p u} * DFT_R(x[q + s (p + t len / R)], t < R)[u]. x: point i at xr + i * xs.
template <int R, bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void stockham_pass(const Plan<T>& pl, int pass, const T* __restrict xr,
                                                                const T* __restrict xi, int64_t xs,
                                                                VT* __restrict yr, VT* __restrict yi, int len,
                                                                int64_t s) {
  const int m = len / R;
  const T* twr = pl.twr[pass].data();
  const T* twi = pl.twi[pass].data();
  const T* c = pl.rc[pass].data();
  const T* sn = pl.rs[pass].data();
  for (int p = 0; p < m; ++p) {
    T wr[R], wi[R];
    for (int u = 1; u < R; ++u)
      wr[u] = twr[size_t(p) * (R - 1) + u - 1], wi[u] = INV ? -twi[size_t(p) * (R - 1) + u - 1]
                                                               : twi[size_t(p) * (R - 1) + u - 1];
    for (int64_t q = 0; q < s; ++q) {
      VT ar[R], ai[R];
      for (int t = 0; t < R; ++t) {
        const int64_t i = q + s * (p + int64_t(t) * m);
        ar[t] = loadv(xr + i * xs), ai[t] = loadv(xi + i * xs);
      }
      if constexpr (R == 2) {
        const VT r0 = ar[0], i0 = ai[0];
        ar[0] = r0 + ar[1], ai[0] = i0 + ai[1], ar[1] = r0 - ar[1], ai[1] = i0 - ai[1];
      } else if constexpr (R == 4) {
        dft4<INV>(ar[0], ai[0], ar[1], ai[1], ar[2], ai[2], ar[3], ai[3]);
      } else {
        dft_odd<R, INV>(ar, ai, c, sn);
      }
      VT* __restrict orr = yr + q + s * R * p;
      VT* __restrict oi = yi + q + s * R * p;
      orr[0] = ar[0], oi[0] = ai[0];
      for (int u = 1; u < R; ++u) {
        if (p == 0) {
          orr[u * s] = ar[u], oi[u * s] = ai[u];
        } else {
          orr[u * s] = ar[u] * wr[u] - ai[u] * wi[u], oi[u * s] = ar[u] * wi[u] + ai[u] * wr[u];
        }
      }
    }
  }
}

// Mixed-radix FFT (every prime factor <= MAX_RADIX): one Stockham pass per radix, the last one into (re, im).
template <bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void fft_mixed(const Plan<T>& p, const T* __restrict sre,
                                                            const T* __restrict sim, int64_t stride, VT* re, VT* im) {
  const int passes = int(p.radix.size());
  VT* tr = fft_scratch<VT>(0, p.n);
  VT* ti = fft_scratch<VT>(1, p.n);
  const T* xr = sre;
  const T* xi = sim;
  int64_t xs = stride, s = 1;
  int len = p.n;
  for (int k = 0; k < passes; ++k) {
    const bool to_out = (passes - 1 - k) % 2 == 0;
    VT* yr = to_out ? re : tr;
    VT* yi = to_out ? im : ti;
    switch (p.radix[k]) {
      case 2: stockham_pass<2, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
      case 3: stockham_pass<3, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
      case 4: stockham_pass<4, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
      case 5: stockham_pass<5, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
      case 7: stockham_pass<7, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
      case 11: stockham_pass<11, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
      default: stockham_pass<13, INV>(p, k, xr, xi, xs, yr, yi, len, s); break;
    }
    s *= p.radix[k], len /= p.radix[k];
    xr = reinterpret_cast<const T*>(yr), xi = reinterpret_cast<const T*>(yi), xs = L;
  }
}

// Bluestein: X_k = c_k sum_j (x_j c_j) conj(c_{k-j}), c_j = e^{-pi i j^2 / n} (conjugated for the inverse), the
// convolution through power-of-two FFTs of length M >= 2n - 1.
template <bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void fft_bluestein(const Plan<T>& p, const T* __restrict sre,
                                                                const T* __restrict sim, int64_t stride, VT* re,
                                                                VT* im) {
  const Plan<T>& q = p.sub[0];
  const int n = p.n, M = q.n;
  VT* ar = fft_scratch<VT>(0, M);
  VT* ai = fft_scratch<VT>(1, M);
  VT* fr = fft_scratch<VT>(2, M);
  VT* fi = fft_scratch<VT>(3, M);
  for (int j = 0; j < n; ++j) {
    const VT xr = loadv(sre + j * stride), xi = loadv(sim + j * stride);
    const T cr = p.chr[j], ci = INV ? -p.chi[j] : p.chi[j];
    ar[j] = xr * cr - xi * ci, ai[j] = xr * ci + xi * cr;
  }
  for (int j = n; j < M; ++j) ar[j] = VT{}, ai[j] = VT{};
  fft_pow2<false>(q, reinterpret_cast<const T*>(ar), reinterpret_cast<const T*>(ai), L, fr, fi);
  for (int k = 0; k < M; ++k) {  // the inverse's kernel is conj(chirp)'s conjugate: B_inv[k] = conj(B[-k])
    const int kk = INV ? (M - k) & (M - 1) : k;
    const T br = p.bfr[kk], bi = INV ? -p.bfi[kk] : p.bfi[kk];
    const VT xr = fr[k], xi = fi[k];
    fr[k] = xr * br - xi * bi, fi[k] = xr * bi + xi * br;
  }
  fft_pow2<true>(q, reinterpret_cast<const T*>(fr), reinterpret_cast<const T*>(fi), L, ar, ai);
  for (int k = 0; k < n; ++k) {
    const T cr = p.chr[k], ci = INV ? -p.chi[k] : p.chi[k];
    re[k] = ar[k] * cr - ai[k] * ci, im[k] = ar[k] * ci + ai[k] * cr;
  }
}

// FFT of L signals of any length n whose point m is src[m * stride] (natural order), into (re, im) in natural
// order (unnormalised; INV: e^{+2 pi i k / n}).
template <bool INV, typename T, typename VT>
static inline __attribute__((always_inline)) void fft_impl(const Plan<T>& p, const T* __restrict sre,
                                                           const T* __restrict sim, int64_t stride, VT* re, VT* im) {
  if (p.pow2)
    fft_pow2<INV>(p, sre, sim, stride, re, im);
  else if (!p.radix.empty())
    fft_mixed<INV>(p, sre, sim, stride, re, im);
  else
    fft_bluestein<INV>(p, sre, sim, stride, re, im);
}

// The transforms, compiled once per direction and type (and CPU clone), called from the slice code: inlining them
// into every variant of it multiplied the compile time by ~8 for no measurable speed.
#define SDKD_FFT_ENTRY(NAME, INV, T)                                                                            \
  SDKD_CLONES __attribute__((noinline)) void NAME(const Plan<T>& p, const T* sre, const T* sim, int64_t stride, \
                                                   Vec<T>::type* re, Vec<T>::type* im) {                       \
    fft_impl<INV>(p, sre, sim, stride, re, im);                                                                \
  }
SDKD_FFT_ENTRY(fft_fwd_f32, false, float)
SDKD_FFT_ENTRY(fft_inv_f32, true, float)
SDKD_FFT_ENTRY(fft_fwd_f64, false, double)
SDKD_FFT_ENTRY(fft_inv_f64, true, double)
#undef SDKD_FFT_ENTRY

template <bool INV>
inline void fft(const Plan<float>& p, const float* sre, const float* sim, int64_t stride, Vec<float>::type* re,
                Vec<float>::type* im) {
  INV ? fft_inv_f32(p, sre, sim, stride, re, im) : fft_fwd_f32(p, sre, sim, stride, re, im);
}
template <bool INV>
inline void fft(const Plan<double>& p, const double* sre, const double* sim, int64_t stride, Vec<double>::type* re,
                Vec<double>::type* im) {
  INV ? fft_inv_f64(p, sre, sim, stride, re, im) : fft_fwd_f64(p, sre, sim, stride, re, im);
}

// Read-only tables shared by all threads for one call.
template <typename T>
struct Shared {
  using VT = typename Vec<T>::type;
  int64_t H, W, Kc, KB, KP;  // KB column blocks of L lanes, KP = KB * L padded columns
  int nb;
  bool band_mean, two;
  Plan<T> ph, pw;
  Buf<VT> mask;  // H x KB: 1 for bins of bands below the last
  Buf<VT> gain;  // H x KB: c_b - c_last (only with > 2 bands and a gradient)
  Buf<VT> ew;    // (nb-1) x H x KB: energy weight of the bin for band b
  T cl = 0, c01 = 0;            // c_last, c_0 - c_last
  // Column blocks whose low-band bins lie in a few rows ky (typically the last block: the cutoff's column,
  // where only ky = 0 is low) take a direct DFT over those rows instead of two length-H FFTs.
  std::vector<std::vector<int>> direct_rows;  // per block: the rows, or empty for the FFT
  std::vector<T> cosh, sinh;                  // e^{-2 pi i k / H} = cosh[k] + i sinh[k], k < H
  Shared(int64_t H_, int64_t W_, int64_t Kc_) : H(H_), W(W_), Kc(Kc_), ph(int(H_)), pw(int(W_)) {}
};

// Most rows a column block may have for the direct DFT: it costs ~4 H multiply-adds per row and direction,
// a length-H FFT ~5 H log2(H) / 2 instructions.
constexpr int MAX_DIRECT_ROWS = 4;
inline int direct_row_limit(int64_t H) {
  int lg = 0;
  while ((int64_t(1) << lg) < H) ++lg;
  return std::min(MAX_DIRECT_ROWS, std::max(1, lg / 2));
}

// Scratch of one thread.
template <typename T>
struct Work {
  using VT = typename Vec<T>::type;
  Buf<VT> re, im, re2, im2;          // one transform (max(H, W) points)
  Buf<VT> nre, nim;                  // a forward row transform's input in natural order
  Buf<VT> ire, iim;                  // an inverse row transform's input in natural order (see inverse_row_group)
  std::vector<T> cr, ci;             // H x KP row spectra (kx < Kc), then the inverse column output
  std::vector<T> gr, gi;             // H x KP gain-weighted inverse column output (two inverses)
  Buf<VT> yr, yi, zr, zi;            // H per column block: masked / gain-weighted column spectra
  std::vector<double> e;             // nb
  Work(const Shared<T>& sh) {
    const int64_t n = std::max(sh.H, (sh.W + L - 1) / L * L);  // rows are handled L columns at a time
    re.resize(n), im.resize(n), re2.resize(n), im2.resize(n), nre.resize(n), nim.resize(n);
    ire.resize(n), iim.resize(n);
    cr.resize(sh.H * sh.KP), ci.resize(sh.H * sh.KP);
    if (sh.two) gr.resize(sh.H * sh.KP), gi.resize(sh.H * sh.KP);
    yr.resize(sh.H), yi.resize(sh.H), zr.resize(sh.H), zi.resize(sh.H);
    e.assign(sh.nb, 0.0);
  }
};

template <typename VT>
static inline __attribute__((always_inline)) auto hsum(const VT& v) {
  auto acc = v[0];
  for (int l = 1; l < L; ++l) acc += v[l];
  return acc;
}

// In-place transpose of 8 vectors of 8 lanes (r[i][j] -> r[j][i]): three rounds of pairwise shuffles.
template <typename VT>
static inline __attribute__((always_inline)) void transpose8(VT* r) {
  VT a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
    a[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  }
  for (int i : {0, 1, 4, 5}) {
    b[i] = __builtin_shufflevector(a[i], a[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    b[i + 2] = __builtin_shufflevector(a[i], a[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shufflevector(b[i], b[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = __builtin_shufflevector(b[i], b[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Row h of a (rows x ld) matrix at columns [c, c + L), or zeros past the last row.
template <typename T>
static inline __attribute__((always_inline)) typename Vec<T>::type row_or_zero(const T* m, int64_t h, int64_t rows,
                                                                                int64_t ld, int64_t c) {
  typename Vec<T>::type v = {};
  if (h < rows) v = loadv(m + h * ld + c);
  return v;
}

// Inverse row transform of the column outputs (cr, ci) (H x KP, kx < Kc) for the 2L rows from h0 into (re, im),
// unscaled: lane l of point w holds row h0 + 2l (re) and row h0 + 2l + 1 (im). Two Hermitian rows per complex
// transform (a + i b). Its natural-order input (k.ire, k.iim) is zero but at kx < Kc and W - kx, the only bins
// ever written, so it needs no clearing per group.
template <typename T>
static inline __attribute__((always_inline)) void inverse_row_group(const Shared<T>& sh, Work<T>& k, const T* cr,
                                                                    const T* ci, int64_t h0,
                                                                    typename Vec<T>::type* re,
                                                                    typename Vec<T>::type* im) {
  using VT = typename Vec<T>::type;
  const int64_t H = sh.H, W = sh.W, Kc = sh.Kc, KP = sh.KP;
  VT* nre = k.ire.data();
  VT* nim = k.iim.data();
  for (int64_t kx0 = 0; kx0 < Kc; kx0 += L) {
    VT Ar[L], Ai[L], Br[L], Bi[L];
    for (int l = 0; l < L; ++l) {
      const int64_t ha = h0 + 2 * l;
      Ar[l] = row_or_zero(cr, ha, H, KP, kx0), Ai[l] = row_or_zero(ci, ha, H, KP, kx0);
      Br[l] = row_or_zero(cr, ha + 1, H, KP, kx0), Bi[l] = row_or_zero(ci, ha + 1, H, KP, kx0);
    }
    transpose8(Ar), transpose8(Ai), transpose8(Br), transpose8(Bi);
    for (int j = 0; j < L && kx0 + j < Kc; ++j) {
      const int64_t kx = kx0 + j;
      if (kx == 0 || 2 * kx == W) {  // c2r keeps only the real part of DC and Nyquist
        nre[kx] = Ar[j], nim[kx] = Br[j];
      } else {  // A + i B at kx, conj(A) + i conj(B) at W - kx
        nre[kx] = Ar[j] - Bi[j], nim[kx] = Ai[j] + Br[j];
        nre[W - kx] = Ar[j] + Bi[j], nim[W - kx] = Br[j] - Ai[j];
      }
    }
  }
  fft<true>(sh.pw, reinterpret_cast<const T*>(nre), reinterpret_cast<const T*>(nim), L, re, im);
}

// Inverse column transform of L-lane column spectra (natural ky order) into rows of (out_r, out_i).
template <typename T>
static inline __attribute__((always_inline)) void inverse_columns(const Shared<T>& sh, Work<T>& k,
                                                                  const typename Vec<T>::type* yr,
                                                                  const typename Vec<T>::type* yi, int64_t kb,
                                                                  T* out_r, T* out_i) {
  using VT = typename Vec<T>::type;
  const int64_t H = sh.H, KB = sh.KB;
  VT* re = k.re2.data();
  VT* im = k.im2.data();
  fft<true>(sh.ph, reinterpret_cast<const T*>(yr), reinterpret_cast<const T*>(yi), L, re, im);
  for (int64_t h = 0; h < H; ++h) {
    storev(out_r + (h * KB + kb) * L, re[h]);
    storev(out_i + (h * KB + kb) * L, im[h]);
  }
}

// Whether gradient stores can bypass the caches (non-temporal, 16-byte aligned SSE stores).
template <typename T>
static inline bool can_stream(const T* p) {
#if defined(__SSE2__)
  return p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 == 0;
#else
  (void)p;
  return false;
#endif
}

// Store one vector of the gradient; non-temporal when `stream` (the caller checked can_stream and W % L == 0).
template <typename T>
static inline __attribute__((always_inline)) void store_grad(T* p, const typename Vec<T>::type& v, bool stream) {
#if defined(__SSE2__)
  if (stream) {
    if constexpr (sizeof(T) == 4) {
      _mm_stream_ps(reinterpret_cast<float*>(p), __m128(__builtin_shufflevector(v, v, 0, 1, 2, 3)));
      _mm_stream_ps(reinterpret_cast<float*>(p) + 4, __m128(__builtin_shufflevector(v, v, 4, 5, 6, 7)));
    } else {
      double* d = reinterpret_cast<double*>(p);
      _mm_stream_pd(d, __m128d(__builtin_shufflevector(v, v, 0, 1)));
      _mm_stream_pd(d + 2, __m128d(__builtin_shufflevector(v, v, 2, 3)));
      _mm_stream_pd(d + 4, __m128d(__builtin_shufflevector(v, v, 4, 5)));
      _mm_stream_pd(d + 6, __m128d(__builtin_shufflevector(v, v, 6, 7)));
    }
    return;
  }
#endif
  storev(p, v);
}

// Column block kb whose low-band bins lie in the rows sh.direct_rows[kb] only: forward DFT of (cr, ci) at those
// rows, their band energies, and the inverse of the masked (gain-weighted) spectrum back into (cr, ci) ((gr, gi)),
// exactly what the FFTs would give for a spectrum that is zero elsewhere.
template <typename T>
static inline __attribute__((always_inline)) void columns_direct(const Shared<T>& sh, Work<T>& k, int64_t kb,
                                                                 T scale) {
  using VT = typename Vec<T>::type;
  const int64_t H = sh.H, KB = sh.KB, KP = sh.KP;
  const int* rows = sh.direct_rows[kb].data();
  const int nr = int(sh.direct_rows[kb].size());
  const T* cs = sh.cosh.data();
  const T* sn = sh.sinh.data();
  T* cr = k.cr.data() + kb * L;
  T* ci = k.ci.data() + kb * L;
  VT dr[MAX_DIRECT_ROWS] = {}, di[MAX_DIRECT_ROWS] = {};
  int64_t qs[MAX_DIRECT_ROWS] = {};  // (rows[r] * h) mod H, stepped with h
  for (int64_t h = 0; h < H; ++h) {
    const VT xr = loadv(cr + h * KP), xi = loadv(ci + h * KP);
    for (int r = 0; r < nr; ++r) {
      const int64_t q = qs[r];
      dr[r] += xr * cs[q] - xi * sn[q], di[r] += xr * sn[q] + xi * cs[q];
      qs[r] = q + rows[r] >= H ? q + rows[r] - H : q + rows[r];
    }
  }
  const int last = sh.nb - 1;
  for (int b = 0; b < last; ++b) {
    VT acc = {};
    for (int r = 0; r < nr; ++r)
      acc += (dr[r] * dr[r] + di[r] * di[r]) * sh.ew[(int64_t(b) * H + rows[r]) * KB + kb];
    k.e[b] += double(hsum(acc)) * double(scale) * double(scale);
  }
  VT yr[MAX_DIRECT_ROWS], yi[MAX_DIRECT_ROWS], zr[MAX_DIRECT_ROWS] = {}, zi[MAX_DIRECT_ROWS] = {};
  for (int r = 0; r < nr; ++r) {
    const VT m = sh.mask[rows[r] * KB + kb];
    yr[r] = dr[r] * m, yi[r] = di[r] * m;
    if (sh.two) {
      const VT g = sh.gain[rows[r] * KB + kb];
      zr[r] = dr[r] * g, zi[r] = di[r] * g;
    }
  }
  T* gr = sh.two ? k.gr.data() + kb * L : nullptr;
  T* gi = sh.two ? k.gi.data() + kb * L : nullptr;
  for (int r = 0; r < nr; ++r) qs[r] = 0;
  for (int64_t h = 0; h < H; ++h) {  // e^{+i theta} = cs - i sn
    VT ar = {}, ai = {}, br = {}, bi = {};
    for (int r = 0; r < nr; ++r) {
      const int64_t q = qs[r];
      qs[r] = q + rows[r] >= H ? q + rows[r] - H : q + rows[r];
      ar += yr[r] * cs[q] + yi[r] * sn[q], ai += yi[r] * cs[q] - yr[r] * sn[q];
      if (sh.two) br += zr[r] * cs[q] + zi[r] * sn[q], bi += zi[r] * cs[q] - zr[r] * sn[q];
    }
    storev(cr + h * KP, ar), storev(ci + h * KP, ai);
    if (sh.two) storev(gr + h * KP, br), storev(gi + h * KP, bi);
  }
}

// x = s - t (or s) at row h, columns [w0, w0 + L).
template <typename T>
static inline __attribute__((always_inline)) typename Vec<T>::type load_x(const T* sp, const T* tp, int64_t off) {
  return tp != nullptr ? loadv(sp + off) - loadv(tp + off) : loadv(sp + off);
}

// The first cnt < L lanes of a vector at p (the rest zero), and their store: a row's last columns when W % L != 0.
template <typename T>
static inline __attribute__((always_inline)) typename Vec<T>::type load_part(const T* p, int64_t cnt) {
  typename Vec<T>::type v = {};
  std::memcpy(&v, p, size_t(cnt) * sizeof(T));
  return v;
}
template <typename T>
static inline __attribute__((always_inline)) void store_part(T* p, const typename Vec<T>::type& v, int64_t cnt) {
  std::memcpy(p, &v, size_t(cnt) * sizeof(T));
}
template <typename T>
static inline __attribute__((always_inline)) typename Vec<T>::type load_x_part(const T* sp, const T* tp,
                                                                               int64_t off, int64_t cnt) {
  return tp != nullptr ? load_part(sp + off, cnt) - load_part(tp + off, cnt) : load_part(sp + off, cnt);
}
// x at row offset off, columns [w, w + L) of a row of width W (zero past the row's end).
template <typename T>
static inline __attribute__((always_inline)) typename Vec<T>::type load_x_row(const T* sp, const T* tp, int64_t off,
                                                                              int64_t w, int64_t W) {
  return w + L <= W ? load_x(sp, tp, off) : load_x_part(sp, tp, off, W - w);
}

// Steps 3b and 4 of a slice, per group of 2L rows: inverse row transforms of the column outputs give x_low (and,
// with more than two bands, the gradient's low part u); the residual z = x - x_low gives the last band's energy,
// and the gradient 2 V(c_last x + (c_0 - c_last) x_low) (or 2 V(c_last x + u)) is written at once, so neither
// x_low nor u is stored. BM: "band_mean" (V adds each row's mean and Nyquist-column parts); GRAD: write the gradient.
template <typename T, bool BM, bool TWO, bool GRAD>
static inline __attribute__((always_inline)) void finish_rows(const Shared<T>& sh, Work<T>& k, const T* sp,
                                                              const T* tp, T* gp) {
  using VT = typename Vec<T>::type;
  const int64_t H = sh.H, W = sh.W, HW = H * W;
  const T s2 = T(1) / T(HW);  // unnormalised forward and inverse transforms
  const bool even_w = W % 2 == 0;
  // the gradient is not read back: bypass the caches (whole aligned vectors: every row starts aligned)
  const bool stream = !BM && GRAD && W % L == 0 && can_stream(gp);
  VT sg;
  for (int l = 0; l < L; ++l) sg[l] = (l & 1) ? T(-1) : T(1);
  const VT two = VT{} + T(2);
  VT* re = k.re.data();
  VT* im = k.im.data();
  VT* re2 = k.re2.data();
  VT* im2 = k.im2.data();
  double ez = 0.0, erow = 0.0;
  for (int64_t h0 = 0; h0 < H; h0 += 2 * L) {
    inverse_row_group(sh, k, k.cr.data(), k.ci.data(), h0, re, im);
    if (TWO) inverse_row_group(sh, k, k.gr.data(), k.gi.data(), h0, re2, im2);
    VT zz = {};
    VT rs[2 * L] = {}, as[2 * L] = {}, ry[2 * L] = {}, ay[2 * L] = {};  // per row of the group (BM)
    // Two vectors (one 64-byte line) of a row at a time, so streaming stores fill whole lines.
    const int halves = W % (2 * L) == 0 ? 2 : 1;
    for (int64_t w0 = 0; w0 < W; w0 += halves * L) {
      VT lo[2][2][L], up[2][2][L];  // [half][odd row][l]
      for (int hf = 0; hf < halves; ++hf) {
        const VT* r = re + w0 + hf * L;
        const VT* q = im + w0 + hf * L;
        for (int j = 0; j < L; ++j) lo[hf][0][j] = r[j] * s2, lo[hf][1][j] = q[j] * s2;
        transpose8(lo[hf][0]), transpose8(lo[hf][1]);
        if (TWO) {
          const VT* r2 = re2 + w0 + hf * L;
          const VT* q2 = im2 + w0 + hf * L;
          for (int j = 0; j < L; ++j) up[hf][0][j] = r2[j] * s2, up[hf][1][j] = q2[j] * s2;
          transpose8(up[hf][0]), transpose8(up[hf][1]);
        }
      }
      for (int l = 0; l < L; ++l) {
        for (int odd = 0; odd < 2; ++odd) {
          const int i = 2 * l + odd;
          if (h0 + i >= H) continue;
          for (int hf = 0; hf < halves; ++hf) {
            const int64_t off = (h0 + i) * W + w0 + hf * L, cnt = W - (w0 + hf * L);
            if (cnt < L) {  // the row's last columns (W % L != 0; then halves == 1): lanes past W set to zero
              VT xl = lo[hf][odd][l], u = TWO ? up[hf][odd][l] : VT{};
              for (int j = int(cnt); j < L; ++j) xl[j] = T(0), u[j] = T(0);
              const VT x = load_x_part(sp, tp, off, cnt);
              const VT z = x - xl;
              zz += z * z;
              if (BM) rs[i] += z, as[i] += z * sg;
              if (!GRAD) continue;
              const VT y = sh.cl * x + (TWO ? u : sh.c01 * xl);
              if (BM) ry[i] += y, ay[i] += y * sg;
              store_part(gp + off, BM ? y : y * two, cnt);
              continue;
            }
            const VT x = load_x(sp, tp, off), xl = lo[hf][odd][l];
            const VT z = x - xl;
            zz += z * z;
            if (BM) rs[i] += z, as[i] += z * sg;
            if (!GRAD) continue;
            const VT y = sh.cl * x + (TWO ? up[hf][odd][l] : sh.c01 * xl);
            if (BM) {
              ry[i] += y, ay[i] += y * sg;
              storev(gp + off, y);
            } else {
              store_grad(gp + off, y * two, stream);
            }
          }
        }
      }
    }
    ez += double(hsum(zz));
    if (!BM) continue;
    for (int i = 0; i < 2 * L && h0 + i < H; ++i) {
      const double r = double(hsum(rs[i])), a = double(hsum(as[i]));
      erow += r * r + (even_w ? a * a : 0.0);
      if (!GRAD) continue;
      // grad = 2 V(y) = y + (row sum + Nyquist-column part) / W
      const T rsum = hsum(ry[i]) / T(W), asum = even_w ? hsum(ay[i]) / T(W) : T(0);
      const VT corr = rsum + asum * sg;
      T* g = gp + (h0 + i) * W;
      for (int64_t w0 = 0; w0 < W; w0 += L) {
        if (w0 + L <= W)
          storev(g + w0, loadv(g + w0) + corr);
        else
          store_part(g + w0, load_part(g + w0, W - w0) + corr, W - w0);
      }
    }
  }
  k.e[sh.nb - 1] += BM ? 0.5 * (ez + erow / double(W)) : ez;
}

// One (H, W) slice: energies into k.e, gradient into gp when given. W >= L (any W: a row's last L columns may
// be partial). ns, nt: the next slice's inputs.
template <typename T>
static inline __attribute__((always_inline)) void slice_impl(const Shared<T>& sh, Work<T>& k, const T* sp,
                                                             const T* tp, T* gp, const T* ns, const T* nt) {
  using VT = typename Vec<T>::type;
  const int64_t H = sh.H, W = sh.W, KB = sh.KB, KP = sh.KP, HW = H * W;
  const int last = sh.nb - 1;
  const T scale = T(1) / std::sqrt(T(HW));
  VT* re = k.re.data();
  VT* im = k.im.data();

  // 1. forward rows: L pairs of rows (a + i b) per transform, unpacked to kx < KP
  VT* nre = k.nre.data();
  VT* nim = k.nim.data();
  for (int64_t h0 = 0; h0 < H; h0 += 2 * L) {
    for (int64_t w0 = 0; w0 < W; w0 += L) {
      VT a[L], b[L];
      for (int l = 0; l < L; ++l) {
        const int64_t ha = h0 + 2 * l, hb = ha + 1;
        a[l] = VT{}, b[l] = VT{};
        if (ha < H) a[l] = load_x_row(sp, tp, ha * W + w0, w0, W);
        if (hb < H) b[l] = load_x_row(sp, tp, hb * W + w0, w0, W);
      }
      if (ns != nullptr && (w0 * sizeof(T)) % 64 == 0)  // the same lines of the next slice, a slice ahead
        for (int64_t h = h0; h < std::min(H, h0 + 2 * L); ++h) {
          __builtin_prefetch(ns + h * W + w0, 0, 3);
          if (nt != nullptr) __builtin_prefetch(nt + h * W + w0, 0, 3);
        }
      transpose8(a), transpose8(b);
      for (int j = 0; j < L; ++j) nre[w0 + j] = a[j], nim[w0 + j] = b[j];
    }
    fft<false>(sh.pw, reinterpret_cast<const T*>(nre), reinterpret_cast<const T*>(nim), L, re, im);
    for (int64_t kx0 = 0; kx0 < KP; kx0 += L) {
      VT Ar[L], Ai[L], Br[L], Bi[L];
      for (int j = 0; j < L; ++j) {
        const int64_t kx = kx0 + j, m = kx == 0 ? 0 : W - kx;  // kx < W: KP <= W
        Ar[j] = (re[kx] + re[m]) * T(0.5), Ai[j] = (im[kx] - im[m]) * T(0.5);
        Br[j] = (im[kx] + im[m]) * T(0.5), Bi[j] = (re[m] - re[kx]) * T(0.5);
      }
      transpose8(Ar), transpose8(Ai), transpose8(Br), transpose8(Bi);
      for (int l = 0; l < L; ++l) {
        const int64_t ha = h0 + 2 * l, hb = ha + 1;
        if (ha < H) storev(&k.cr[ha * KP + kx0], Ar[l]), storev(&k.ci[ha * KP + kx0], Ai[l]);
        if (hb < H) storev(&k.cr[hb * KP + kx0], Br[l]), storev(&k.ci[hb * KP + kx0], Bi[l]);
      }
    }
  }

  // 2. columns: FFT along H per block of L columns; energies of the low bands; masked spectra
  for (int64_t kb = 0; kb < KB; ++kb) {
    if (!sh.direct_rows[kb].empty()) {
      columns_direct(sh, k, kb, scale);
      continue;
    }
    VT* re2 = k.re2.data();
    VT* im2 = k.im2.data();
    fft<false>(sh.ph, k.cr.data() + kb * L, k.ci.data() + kb * L, KP, re2, im2);
    for (int b = 0; b < last; ++b) {
      const VT* ew = &sh.ew[(int64_t(b) * H) * KB + kb];
      VT acc = {};
      for (int64_t ky = 0; ky < H; ++ky) acc += (re2[ky] * re2[ky] + im2[ky] * im2[ky]) * ew[ky * KB];
      k.e[b] += double(hsum(acc)) * double(scale) * double(scale);
    }
    for (int64_t ky = 0; ky < H; ++ky) {
      const VT m = sh.mask[ky * KB + kb];
      k.yr[ky] = re2[ky] * m, k.yi[ky] = im2[ky] * m;
      if (sh.two) {
        const VT g = sh.gain[ky * KB + kb];
        k.zr[ky] = re2[ky] * g, k.zi[ky] = im2[ky] * g;
      }
    }
    // 3a. inverse columns (the forward FFT's work buffers are free again)
    inverse_columns(sh, k, k.yr.data(), k.yi.data(), kb, k.cr.data(), k.ci.data());
    if (sh.two) inverse_columns(sh, k, k.zr.data(), k.zi.data(), kb, k.gr.data(), k.gi.data());
  }

  // 3b + 4. inverse rows, residual energy (last band) and gradient
  if (sh.band_mean) {
    if (gp == nullptr) finish_rows<T, true, false, false>(sh, k, sp, tp, gp);
    else if (sh.two) finish_rows<T, true, true, true>(sh, k, sp, tp, gp);
    else finish_rows<T, true, false, true>(sh, k, sp, tp, gp);
  } else {
    if (gp == nullptr) finish_rows<T, false, false, false>(sh, k, sp, tp, gp);
    else if (sh.two) finish_rows<T, false, true, true>(sh, k, sp, tp, gp);
    else finish_rows<T, false, false, true>(sh, k, sp, tp, gp);
  }
}

SDKD_CLONES void slice_f32(const Shared<float>& sh, Work<float>& k, const float* sp, const float* tp, float* gp,
                           const float* ns, const float* nt) {
  slice_impl<float>(sh, k, sp, tp, gp, ns, nt);
}
SDKD_CLONES void slice_f64(const Shared<double>& sh, Work<double>& k, const double* sp, const double* tp,
                           double* gp, const double* ns, const double* nt) {
  slice_impl<double>(sh, k, sp, tp, gp, ns, nt);
}
inline void run_slice(const Shared<float>& sh, Work<float>& k, const float* sp, const float* tp, float* gp,
                      const float* ns, const float* nt) {
  slice_f32(sh, k, sp, tp, gp, ns, nt);
}
inline void run_slice(const Shared<double>& sh, Work<double>& k, const double* sp, const double* tp, double* gp,
                      const double* ns, const double* nt) {
  slice_f64(sh, k, sp, tp, gp, ns, nt);
}

template <typename T>
void run(uintptr_t s_, uintptr_t t_, uintptr_t grad_, uintptr_t energies, uintptr_t gains_, int64_t N, int64_t H,
         int64_t W, const int32_t* bmap, int64_t Kc, int nb, bool band_mean, uintptr_t loss = 0) {
  const T* s = reinterpret_cast<const T*>(s_);
  const T* t = reinterpret_cast<const T*>(t_);
  T* grad = reinterpret_cast<T*>(grad_);
  const double* gains = reinterpret_cast<const double*>(gains_);
  const int last = nb - 1;

  Shared<T> sh(H, W, Kc);
  sh.KB = (Kc + L - 1) / L, sh.KP = sh.KB * L, sh.nb = nb, sh.band_mean = band_mean;
  sh.two = grad != nullptr && nb > 2;
  const int64_t KB = sh.KB;
  sh.mask.resize(H * KB);
  if (sh.two) sh.gain.resize(H * KB);
  sh.ew.resize(std::max(0, last) * H * KB);
  for (int64_t ky = 0; ky < H; ++ky)
    for (int64_t kx = 0; kx < Kc; ++kx) {
      const int b = bmap[ky * Kc + kx];
      if (b < 0 || b > last) throw std::invalid_argument("spectral_loss_cpu_fft: band map entry out of range");
      if (b == last) continue;
      const int64_t q = ky * KB + kx / L;
      const int l = int(kx % L);
      sh.mask[q][l] = T(1);
      if (sh.two) sh.gain[q][l] = T(gains[b] - gains[last]);
      const bool edge = kx == 0 || 2 * kx == W;
      sh.ew[int64_t(b) * H * KB + q][l] = (band_mean || edge) ? T(1) : T(2);
    }
  if (grad != nullptr) sh.cl = T(gains[last]), sh.c01 = T(gains[0] - gains[last]);
  sh.cosh.resize(H), sh.sinh.resize(H);
  for (int64_t q = 0; q < H; ++q) {
    const double a = 2.0 * M_PI * double(q) / double(H);
    sh.cosh[q] = T(std::cos(a)), sh.sinh[q] = T(-std::sin(a));
  }
  sh.direct_rows.assign(KB, {});
  const int limit = direct_row_limit(H);
  for (int64_t kb = 0; kb < KB; ++kb) {
    std::vector<int> rows;
    for (int64_t ky = 0; ky < H; ++ky) {
      bool any = false;
      for (int l = 0; l < L; ++l) any = any || sh.mask[ky * KB + kb][l] != T(0);
      if (any) rows.push_back(int(ky));
    }
    if (!rows.empty() && int(rows.size()) <= limit) sh.direct_rows[kb] = std::move(rows);
  }

  const int64_t HW = H * W;
  std::vector<double> total(nb, 0.0);
#pragma omp parallel
  {
    Work<T> k(sh);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      run_slice(sh, k, s + n * HW, t != nullptr ? t + n * HW : nullptr, grad != nullptr ? grad + n * HW : nullptr,
                n + 1 < N ? s + (n + 1) * HW : nullptr, n + 1 < N && t != nullptr ? t + (n + 1) * HW : nullptr);
#if defined(__SSE2__)
    _mm_sfence();  // order this thread's streaming gradient stores before the join
#endif
#pragma omp critical
    for (int b = 0; b < nb; ++b) total[b] += k.e[b];
  }
  if (energies != 0) {
    double* out = reinterpret_cast<double*>(energies);
    for (int b = 0; b < nb; ++b) out[b] = total[b];
  }
  if (loss != 0) {  // sum_b c_b E_b in fp64, one rounding to the input dtype
    double acc = 0.0;
    for (int b = 0; b < nb; ++b) acc += gains[b] * total[b];
    *reinterpret_cast<T*>(loss) = T(acc);
  }
}

void spectral_loss_cpu_fft(uintptr_t s, uintptr_t t, uintptr_t grad, uintptr_t energies, uintptr_t gains, int dtype,
                           int64_t N, int64_t H, int64_t W, uintptr_t bmap, int64_t Kc, int nb, bool band_mean,
                           uintptr_t loss) {
  if (N < 1 || H < 1 || W < L || H > (1 << 20) || W > (1 << 20) || Kc < 1 || Kc > W / 2 + 1 || nb < 2)
    throw std::invalid_argument("spectral_loss_cpu_fft: bad sizes (H >= 1, W >= 8)");
  if (s == 0 || (energies == 0 && loss == 0) || bmap == 0 || ((grad != 0 || loss != 0) && gains == 0))
    throw std::invalid_argument("spectral_loss_cpu_fft: null pointer");
  const int32_t* bm = reinterpret_cast<const int32_t*>(bmap);
  py::gil_scoped_release nogil;
  if (dtype == 0)
    run<float>(s, t, grad, energies, gains, N, H, W, bm, Kc, nb, band_mean, loss);
  else if (dtype == 1)
    run<double>(s, t, grad, energies, gains, N, H, W, bm, Kc, nb, band_mean, loss);
  else
    throw std::invalid_argument("spectral_loss_cpu_fft: dtype code must be 0 (float32) or 1 (float64)");
}

}  // namespace

void register_spectral_loss_fft(py::module_& m) {
  m.def("spectral_loss_cpu_fft", &spectral_loss_cpu_fft,
        "Fused SpectralKD energies (+ gradient when grad != 0) on CPU through real FFTs, for any H and W >= 8 "
        "(mixed-radix or Bluestein transforms where not a power of two). "
        "Pointers are contiguous buffers: s, t (t = 0: x = s), grad (0: energies only), energies (float64[nb], out; "
        "0: none), gains (float64[nb]); bmap int32 (H x Kc): band of every bin with kx < Kc (every bin with kx >= Kc "
        "is in the last band); loss (0-dim, input dtype, out; 0: none): sum_b gains[b] energies[b]. "
        "dtype 0 = float32, 1 = float64.",
        py::arg("s"), py::arg("t"), py::arg("grad"), py::arg("energies"), py::arg("gains"), py::arg("dtype"),
        py::arg("N"), py::arg("H"), py::arg("W"), py::arg("bmap"), py::arg("Kc"), py::arg("nb"),
        py::arg("band_mean"), py::arg("loss") = 0);
  // Lets the Python side tell this kernel from older builds that took powers of two only.
  m.attr("spectral_loss_cpu_fft_any_size") = true;
}
