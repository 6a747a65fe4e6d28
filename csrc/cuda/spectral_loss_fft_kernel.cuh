// Device code of the FFT-based fused SpectralKD CUDA kernel, for power-of-two H and W: one block per
// (H, W) slice, everything in shared memory. Same outputs as the box kernel (spectral_loss_kernel.cuh)
// and the same algorithm as the CPU real-FFT kernel (csrc/cpu/spectral_loss_fft.cpp), with radix-2 FFTs
// (O(n log n) per line instead of the box DFT's O(n Kc)):
//   1. x = s - t; row FFTs, two real rows packed into one complex FFT, unpacked for kx < Kc only;
//   2. column FFTs of those Kc columns: the ortho spectrum X of every bin with kx < Kc (all ky);
//   3. low-band energies from X; the masked spectrum (bands below the last) and, with more than two
//      bands, the gain-weighted one (c_b - c_last);
//   4. inverse column FFTs, then inverse row FFTs of the Hermitian-extended half spectra, two real
//      outputs per complex FFT: two rows of x_low, or two rows of the gradient part u (never x_low with
//      u: their scales differ by about the gains, ~1/numel, and one's rounding would swamp the other);
//   5. the shared tail (finish_slice): residual energy of z = x - x_low as the last band (never
//      total - low), the gradient 2 V(c_last x + u), band energies, the loss from the last block.
// Forward FFTs are decimation-in-frequency (natural order in, bit-reversed out) and inverse ones
// decimation-in-time (bit-reversed in, natural out), so no reordering pass is needed: the steps in
// between index the bit-reversed positions directly.
#pragma once

#include "cuda/spectral_loss_kernel.cuh"

#ifdef SDKD_CUDA_EMU
#define SDKD_BREV(v) emu_brev(v)
#else
#define SDKD_BREV(v) __brev(v)
#endif

namespace sdkd_spectral_cuda {

template <typename Tc>
struct alignas(2 * sizeof(Tc)) Cx {
  Tc re, im;
};

// v's lowest `bits` bits reversed (bits >= 1)
__device__ __forceinline__ int bit_reverse(int v, int bits) {
  return static_cast<int>(SDKD_BREV(static_cast<unsigned>(v)) >> (32 - bits));
}

// Butterfly idx of a radix-2 pass at span 2^lh over sequences of length 2^logn laid out as in fft_dif:
// the offset of its first element (the second is 2^lh * es further) and, in k, its twiddle's exponent.
__device__ __forceinline__ int butterfly_at(int idx, int logn, int lh, int qs, int es, int& k) {
  const int q = idx >> (logn - 1), r = idx & ((1 << (logn - 1)) - 1);
  k = r & ((1 << lh) - 1);
  return q * qs + (((r >> lh) << (lh + 1)) + k) * es;
}

// In-place forward FFTs (e^-) of `count` sequences of length 2^logn, element (q, i) at d[q*qs + i*es]:
// natural order in, bit-reversed out. tw[k] = exp(-2 pi i k / nmax), k < nmax / 2. Ends with a barrier.
template <typename Tc>
__device__ void fft_dif(Cx<Tc>* d, int count, int logn, int qs, int es, const Cx<Tc>* tw, int nmax) {
  const int total = count << (logn - 1);
  for (int lh = logn - 1; lh >= 0; --lh) {
    const int half = 1 << lh;
    const int twm = nmax >> (lh + 1);  // exp(-2 pi i k / (2 half)) = tw[k * nmax / (2 half)]
    for (int idx = threadIdx.x; idx < total; idx += kThreads) {
      int k;
      Cx<Tc>* p0 = d + butterfly_at(idx, logn, lh, qs, es, k);
      Cx<Tc>* p1 = p0 + half * es;
      const Cx<Tc> a = *p0, b = *p1, w = tw[k * twm];
      const Tc dr = a.re - b.re, di = a.im - b.im;
      *p0 = Cx<Tc>{a.re + b.re, a.im + b.im};
      *p1 = Cx<Tc>{dr * w.re - di * w.im, dr * w.im + di * w.re};
    }
    __syncthreads();
  }
}

// In-place inverse FFTs (e^+, unnormalised) of `count` sequences, layout as fft_dif: bit-reversed order
// in, natural out. Ends with a barrier.
template <typename Tc>
__device__ void ifft_dit(Cx<Tc>* d, int count, int logn, int qs, int es, const Cx<Tc>* tw, int nmax) {
  const int total = count << (logn - 1);
  for (int lh = 0; lh < logn; ++lh) {
    const int half = 1 << lh;
    const int twm = nmax >> (lh + 1);
    for (int idx = threadIdx.x; idx < total; idx += kThreads) {
      int k;
      Cx<Tc>* p0 = d + butterfly_at(idx, logn, lh, qs, es, k);
      Cx<Tc>* p1 = p0 + half * es;
      const Cx<Tc> a = *p0, b = *p1, w = tw[k * twm];
      const Tc br = b.re * w.re + b.im * w.im, bi = b.im * w.re - b.re * w.im;  // b * conj(w)
      *p0 = Cx<Tc>{a.re + br, a.im + bi};
      *p1 = Cx<Tc>{a.re - br, a.im - bi};
    }
    __syncthreads();
  }
}

// Bin f of the Hermitian extension of a half spectrum p[0..Kc) (bins kx < Kc; kx = 0 and W/2 real)
template <typename Tc>
__device__ __forceinline__ Cx<Tc> hermitian_bin(const Cx<Tc>* p, int f, int W, int Kc) {
  if (f < Kc) return Cx<Tc>{p[f].re, (f == 0 || 2 * f == W) ? Tc(0) : p[f].im};
  if (2 * f > W && W - f < Kc) return Cx<Tc>{p[W - f].re, -p[W - f].im};
  return Cx<Tc>{Tc(0), Tc(0)};
}

// Shared memory (bytes) of spectral_loss_fft_kernel; two = gradient with more than two bands. keep_x: x stays in
// shared memory for the residual pass (else it is read again from s and t, which the L2 cache still holds;
// "mean" only, as band_mean's row sums need the residual stored).
inline int64_t fft_smem_bytes(int dtype, int64_t H, int64_t W, int64_t Kc, int nb, bool with_grad, bool keep_x) {
  const int64_t elt = dtype == 1 ? 8 : 4;
  const bool two = with_grad && nb > 2;
  const int64_t nmax = H > W ? H : W;
  const int64_t cx = (two ? H : H / 2) * W + (two ? 2 : 1) * H * Kc + nmax / 2;  // complex elements
  return (2 * cx + (keep_x ? H * W : 0) + 2 * H) * elt;
}

template <typename T, typename Tc, bool KEEP_X>
__global__ void __launch_bounds__(kThreads)
    spectral_loss_fft_kernel(const T* __restrict__ s, const T* __restrict__ t, T* __restrict__ grad,
                             double* __restrict__ energies, const double* __restrict__ gains, int logH, int logW,
                             const int* __restrict__ bmap, int Kc, int nb, bool band_mean, T* __restrict__ loss) {
  SDKD_DYNAMIC_SHARED(smem_raw);
  const int H = 1 << logH, W = 1 << logW, HW = H * W;
  const int tid = threadIdx.x;
  const int last = nb - 1;
  const bool with_grad = grad != nullptr;
  const bool two = with_grad && nb > 2;
  const int nmax = H > W ? H : W;
  const int seqs = two ? H : H / 2;                        // complex sequences of the inverse row pass (two:
                                                           // x_low row pairs, then u row pairs)
  Cx<Tc>* buf = reinterpret_cast<Cx<Tc>*>(smem_raw);       // seqs x W: row FFTs (H / 2 used going forward)
  Cx<Tc>* R = buf + seqs * W;                              // H x Kc: row spectra -> X -> inverse columns
  Cx<Tc>* Z = R + H * Kc;                                  // H x Kc: gain-weighted copy (two only)
  Cx<Tc>* tw = Z + (two ? H * Kc : 0);                     // nmax / 2 twiddles
  Tc* xs = reinterpret_cast<Tc*>(tw + nmax / 2);           // KEEP_X: H x W: x, later z = x - x_low
  Tc* rows = xs + (KEEP_X ? HW : 0);                       // 2 x H (band_mean row sums of y)
  __shared__ double e_sh[SDKD_SPECTRAL_MAX_BANDS];

  const int64_t base = static_cast<int64_t>(blockIdx.x) * HW;
  const Tc scale = Tc(1) / sqrt(Tc(HW));
  double e_loc[SDKD_SPECTRAL_MAX_BANDS];
  for (int b = 0; b < SDKD_SPECTRAL_MAX_BANDS; ++b) e_loc[b] = 0.0;
  if (tid < SDKD_SPECTRAL_MAX_BANDS) e_sh[tid] = 0.0;

  for (int k = tid; k < nmax / 2; k += kThreads) {
    double sn, cs;
    sincospi(-2.0 * k / nmax, &sn, &cs);
    tw[k] = Cx<Tc>{static_cast<Tc>(cs), static_cast<Tc>(sn)};
  }
  // x, and rows (2r, 2r + 1) packed as the real and imaginary parts of sequence r
  for (int k = tid; k < HW; k += kThreads) {
    const int h = k >> logW, w = k & (W - 1);
    const Tc v = t != nullptr ? load_c<Tc>(s, base + k) - load_c<Tc>(t, base + k) : load_c<Tc>(s, base + k);
    if (KEEP_X) xs[k] = v;
    Tc* c = &buf[(h >> 1) * W + w].re;
    c[h & 1] = v;
  }
  __syncthreads();

  // 1. row FFTs; unpack kx < Kc: X_a = (Z_k + conj Z_-k) / 2, X_b = (Z_k - conj Z_-k) / 2i
  fft_dif(buf, H / 2, logW, W, 1, tw, nmax);
  for (int k = tid; k < (H / 2) * Kc; k += kThreads) {
    const int r = k / Kc, j = k - r * Kc;
    const Cx<Tc> z1 = buf[r * W + bit_reverse(j, logW)], z2 = buf[r * W + bit_reverse((W - j) & (W - 1), logW)];
    R[(2 * r) * Kc + j] = Cx<Tc>{Tc(0.5) * (z1.re + z2.re), Tc(0.5) * (z1.im - z2.im)};
    R[(2 * r + 1) * Kc + j] = Cx<Tc>{Tc(0.5) * (z1.im + z2.im), Tc(0.5) * (z2.re - z1.re)};
  }
  __syncthreads();

  // 2. column FFTs of the Kc columns (bit-reversed ky); 3. energies, masked and gain-weighted spectra
  fft_dif(R, Kc, logH, 1, Kc, tw, nmax);
  const double g_last = with_grad ? gains[last] : 0.0;
  for (int k = tid; k < H * Kc; k += kThreads) {
    const int p = k / Kc, j = k - p * Kc;
    const int b = bmap[bit_reverse(p, logH) * Kc + j];
    Cx<Tc> X{R[k].re * scale, R[k].im * scale};
    if (b < last) {
      const double cw = (band_mean || j == 0 || 2 * j == W) ? 1.0 : 2.0;
      e_loc[b] += cw * (double(X.re) * X.re + double(X.im) * X.im);
    } else {
      X = Cx<Tc>{Tc(0), Tc(0)};
    }
    R[k] = X;
    if (two) {
      const Tc g = b < last ? Tc(gains[b] - g_last) : Tc(0);
      Z[k] = Cx<Tc>{g * X.re, g * X.im};
    }
  }
  __syncthreads();

  // 4. inverse column FFTs, then the inverse row FFTs of the Hermitian-extended rows, two real outputs each
  ifft_dit(R, Kc, logH, 1, Kc, tw, nmax);
  if (two) ifft_dit(Z, Kc, logH, 1, Kc, tw, nmax);
  for (int k = tid; k < seqs * W; k += kThreads) {
    const int r = k >> logW, f = bit_reverse(k & (W - 1), logW);
    const Cx<Tc>* src = r < H / 2 ? R + 2 * r * Kc : Z + (2 * r - H) * Kc;
    const Cx<Tc> a = hermitian_bin(src, f, W, Kc), b = hermitian_bin(src + Kc, f, W, Kc);
    buf[k] = Cx<Tc>{a.re - b.im, a.im + b.re};  // a + i b
  }
  __syncthreads();
  ifft_dit(buf, seqs, logW, W, 1, tw, nmax);

  // 5. residual z (into xs) and gradient base y = c_last x + u (into buf, where x_low was)
  const Tc cl = with_grad ? Tc(g_last) : Tc(0);
  const Tc c01 = with_grad ? Tc(gains[0] - g_last) : Tc(0);
  double e_high = 0.0;
  const int upart = (H / 2) * W;  // two: offset of the u row pairs in buf
  for (int k = tid; k < HW; k += kThreads) {
    const int h = k >> logW, w = k & (W - 1);
    Tc* c = &buf[(h >> 1) * W + w].re + (h & 1);
    const Tc xl = *c * scale;
    const Tc u = two ? (&buf[upart + (h >> 1) * W + w].re)[h & 1] * scale : c01 * xl;
    const Tc xv = KEEP_X               ? xs[k]
                  : t != nullptr ? load_c<Tc>(s, base + k) - load_c<Tc>(t, base + k)
                                 : load_c<Tc>(s, base + k);
    const Tc z = xv - xl;
    if (KEEP_X) xs[k] = z;
    if (!band_mean) e_high += double(z) * z;
    *c = cl * xv + u;
  }
  __syncthreads();
  auto y_at = [&](int k) { return (&buf[(k >> (logW + 1)) * W + (k & (W - 1))].re)[(k >> logW) & 1]; };
  // z_at is read for band_mean only, which the host runs with KEEP_X
  finish_slice<T, Tc>([&](int k) { return xs[k]; }, y_at, rows, grad, base, H, W, band_mean, e_loc, e_high, e_sh,
                      energies, gains, nb, loss);
}

}  // namespace sdkd_spectral_cuda
