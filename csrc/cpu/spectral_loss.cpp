// Fused SpectralKD loss on the CPU (OpenMP over (H, W) slices): band energies and the gradient in
// one pass, without a full FFT.
//
// Per slice x = s - t (or x = s when t is null): the low bands' ortho DFT coefficients inside a small
// box of rows (ky) and columns (kx <= kc) are two real matmul pairs with truncated DFT tables,
//   X = scale * (Cr - i Sr) x (Cc - i Sc)^T,  scale = 1/sqrt(H W).
// Energies of the bands below the last are summed from X (weights per column: Hermitian w for
// "mean", 1 for "band_mean"). The last band is the energy of the spatial residual z = x - x_low,
// x_low the inverse transform of the masked box (never total - low: that cancels badly).
// With per-band gains c_b the gradient is 2 V(c_last x + sum_{b<last} (c_b - c_last) P_b x);
// V is the identity for "mean" and, for "band_mean", V(y) = (y + row-mean and Nyquist-column parts)/2.
// Python prepares the tables (shared with the CUDA and Triton backends) and checks every input.
#include <pybind11/pybind11.h>

#include "cpu/target_clones.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#ifdef SDKD_WITH_CUDA
#include "cuda/spectral_loss.h"
#include "sdkd_cuda.h"
#endif

namespace py = pybind11;

namespace {

struct Args {
  uintptr_t s, t, grad, energies, gains;
  int64_t N, H, W;
  uintptr_t cc, sc, cr, sr, bidx;
  int64_t Kr, Kc;
  int nb;
  bool band_mean;
};

// Tables and scratch for one thread. All matrices are row-major; JP = 2 Kc rounded up to 8.
template <typename T>
struct Work {
  int64_t H, W, Kr, Kc, JP;
  std::vector<T> Tf;    // W x JP: [Cc^T | Sc^T] (forward columns)
  std::vector<T> Ti;    // 2Kc x W: [Cc; Sc] (inverse columns)
  std::vector<T> cr, sr, colw;
  std::vector<T> x, low, u, AB, U, V, Y, Z, Q1, Q2, P;
};

// Inverse transform of a box spectrum Ycat (Kr x JP: [Yr | Yi], column weights folded in) into out (H x W).
template <typename T>
static inline __attribute__((always_inline)) void inverse_box(Work<T>& k, const T* Ycat, T* out, T scale) {
  const int64_t H = k.H, W = k.W, Kr = k.Kr, Kc = k.Kc, JP = k.JP;
  std::fill(k.Q1.begin(), k.Q1.end(), T(0));
  std::fill(k.Q2.begin(), k.Q2.end(), T(0));
  for (int64_t h = 0; h < H; ++h) {
    T* q1 = &k.Q1[h * JP];
    T* q2 = &k.Q2[h * JP];
    for (int64_t i = 0; i < Kr; ++i) {
      const T c = k.cr[i * H + h], sn = k.sr[i * H + h];
      const T* y = Ycat + i * JP;
      for (int64_t j = 0; j < JP; ++j) {
        q1[j] += c * y[j];
        q2[j] += sn * y[j];
      }
    }
    // P = [Pr | -Pi] with Pr = Q1r - Q2i, Pi = Q2r + Q1i
    T* p = &k.P[h * 2 * Kc];
    for (int64_t j = 0; j < Kc; ++j) {
      p[j] = (q1[j] - q2[Kc + j]) * scale;
      p[Kc + j] = -(q2[j] + q1[Kc + j]) * scale;
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    T* o = out + h * W;
    for (int64_t w = 0; w < W; ++w) o[w] = T(0);
    const T* p = &k.P[h * 2 * Kc];
    for (int64_t j = 0; j < 2 * Kc; ++j) {
      const T pj = p[j];
      const T* t = &k.Ti[j * W];
      for (int64_t w = 0; w < W; ++w) o[w] += pj * t[w];
    }
  }
}

// One (H, W) slice: energies into e[nb], gradient into gp when gains are given.
template <typename T>
static inline __attribute__((always_inline)) void slice_impl(Work<T>& k, const T* sp, const T* tp, T* gp,
                                                             const int32_t* bidx, const double* gains,
                                                             const double* glow, int nb, bool band_mean,
                                                             double* e) {
  const int64_t H = k.H, W = k.W, Kr = k.Kr, Kc = k.Kc, JP = k.JP, HW = H * W;
  const int last = nb - 1;
  const bool even_w = W % 2 == 0;
  const T scale = T(1) / std::sqrt(T(HW));
  const bool two = gp != nullptr && nb > 2;
  T* x = k.x.data();
  if (tp != nullptr) {
    for (int64_t q = 0; q < HW; ++q) x[q] = sp[q] - tp[q];
  } else {
    for (int64_t q = 0; q < HW; ++q) x[q] = sp[q];
  }
  // forward columns: AB[h] = x[h] [Cc^T | Sc^T]
  for (int64_t h = 0; h < H; ++h) {
    T* ab = &k.AB[h * JP];
    for (int64_t j = 0; j < JP; ++j) ab[j] = T(0);
    const T* xr = x + h * W;
    for (int64_t w = 0; w < W; ++w) {
      const T xv = xr[w];
      const T* t = &k.Tf[w * JP];
      for (int64_t j = 0; j < JP; ++j) ab[j] += xv * t[j];
    }
  }
  // forward rows: U = Cr AB, V = Sr AB; Xr = U_A - V_B, Xi = -(V_A + U_B)
  for (int64_t i = 0; i < Kr; ++i) {
    T* uu = &k.U[i * JP];
    T* vv = &k.V[i * JP];
    for (int64_t j = 0; j < JP; ++j) uu[j] = vv[j] = T(0);
    for (int64_t h = 0; h < H; ++h) {
      const T c = k.cr[i * H + h], sn = k.sr[i * H + h];
      const T* ab = &k.AB[h * JP];
      for (int64_t j = 0; j < JP; ++j) {
        uu[j] += c * ab[j];
        vv[j] += sn * ab[j];
      }
    }
    T* y = &k.Y[i * JP];
    T* z = &k.Z[i * JP];
    for (int64_t j = 0; j < Kc; ++j) {
      const T re = (uu[j] - vv[Kc + j]) * scale, im = -(vv[j] + uu[Kc + j]) * scale;
      const int b = bidx[i * Kc + j];
      const T cw = k.colw[j];
      if (b < last) {
        e[b] += (band_mean ? 1.0 : double(cw)) * (double(re) * re + double(im) * im);
        y[j] = re * cw;
        y[Kc + j] = im * cw;
      } else {
        y[j] = y[Kc + j] = T(0);
      }
      if (two) {
        const T g = b < last ? T(glow[b]) : T(0);
        z[j] = y[j] * g;
        z[Kc + j] = y[Kc + j] * g;
      }
    }
  }
  inverse_box(k, k.Y.data(), k.low.data(), scale);
  if (two) inverse_box(k, k.Z.data(), k.u.data(), scale);

  // last band: energy of the residual z = x - x_low
  const T* low = k.low.data();
  double ez = 0.0, erow = 0.0;
  for (int64_t h = 0; h < H; ++h) {
    double rs = 0.0, as = 0.0, zz = 0.0;
    for (int64_t w = 0; w < W; ++w) {
      const double z = double(x[h * W + w]) - double(low[h * W + w]);
      zz += z * z;
      rs += z;
      as += (w & 1) ? -z : z;
    }
    ez += zz;
    erow += rs * rs + (even_w ? as * as : 0.0);
  }
  e[last] += band_mean ? 0.5 * (ez + erow / double(W)) : ez;

  if (gp == nullptr) return;
  const T cl = T(gains[last]), c01 = T(glow[0]);
  for (int64_t h = 0; h < H; ++h) {
    T* g = gp + h * W;
    const T* xh = x + h * W;
    const T* lh = low + h * W;
    // y = c_last x + sum_{b<last} (c_b - c_last) P_b x
    if (two) {
      const T* uh = &k.u[h * W];
      for (int64_t w = 0; w < W; ++w) g[w] = cl * xh[w] + uh[w];
    } else {
      for (int64_t w = 0; w < W; ++w) g[w] = cl * xh[w] + c01 * lh[w];
    }
    if (band_mean) {  // grad = 2 V(y) = y + (row sum + Nyquist-column part) / W
      T rs = 0, as = 0;
      for (int64_t w = 0; w < W; ++w) {
        rs += g[w];
        as += (w & 1) ? -g[w] : g[w];
      }
      if (!even_w) as = 0;
      for (int64_t w = 0; w < W; ++w) g[w] = g[w] + (rs + ((w & 1) ? -as : as)) / T(W);
    } else {
      for (int64_t w = 0; w < W; ++w) g[w] = T(2) * g[w];
    }
  }
}

SDKD_CLONES void slice_f32(Work<float>& k, const float* sp, const float* tp, float* gp, const int32_t* bidx,
                           const double* gains, const double* glow, int nb, bool band_mean, double* e) {
  slice_impl<float>(k, sp, tp, gp, bidx, gains, glow, nb, band_mean, e);
}
SDKD_CLONES void slice_f64(Work<double>& k, const double* sp, const double* tp, double* gp, const int32_t* bidx,
                           const double* gains, const double* glow, int nb, bool band_mean, double* e) {
  slice_impl<double>(k, sp, tp, gp, bidx, gains, glow, nb, band_mean, e);
}
inline void run_slice(Work<float>& k, const float* sp, const float* tp, float* gp, const int32_t* bidx,
                      const double* gains, const double* glow, int nb, bool band_mean, double* e) {
  slice_f32(k, sp, tp, gp, bidx, gains, glow, nb, band_mean, e);
}
inline void run_slice(Work<double>& k, const double* sp, const double* tp, double* gp, const int32_t* bidx,
                      const double* gains, const double* glow, int nb, bool band_mean, double* e) {
  slice_f64(k, sp, tp, gp, bidx, gains, glow, nb, band_mean, e);
}

template <typename T>
void spectral_loss_slices(const Args& a) {
  const T* s = reinterpret_cast<const T*>(a.s);
  const T* t = reinterpret_cast<const T*>(a.t);
  T* grad = reinterpret_cast<T*>(a.grad);
  const double* gains = reinterpret_cast<const double*>(a.gains);
  const T* cc = reinterpret_cast<const T*>(a.cc);
  const T* sc = reinterpret_cast<const T*>(a.sc);
  const int32_t* bidx = reinterpret_cast<const int32_t*>(a.bidx);
  const int64_t N = a.N, H = a.H, W = a.W, Kr = a.Kr, Kc = a.Kc, HW = H * W;
  const int nb = a.nb, last = nb - 1;
  const int64_t JP = (2 * Kc + 7) / 8 * 8;

  // shared tables: w(kx) folds the half-plane into the full plane; [Cc^T | Sc^T] and [Cc; Sc]
  Work<T> proto;
  proto.H = H, proto.W = W, proto.Kr = Kr, proto.Kc = Kc, proto.JP = JP;
  proto.colw.resize(Kc);
  for (int64_t j = 0; j < Kc; ++j) proto.colw[j] = (j == 0 || (W % 2 == 0 && 2 * j == W)) ? T(1) : T(2);
  proto.Tf.assign(W * JP, T(0));
  proto.Ti.resize(2 * Kc * W);
  for (int64_t j = 0; j < Kc; ++j)
    for (int64_t w = 0; w < W; ++w) {
      proto.Tf[w * JP + j] = cc[j * W + w];
      proto.Tf[w * JP + Kc + j] = sc[j * W + w];
      proto.Ti[j * W + w] = cc[j * W + w];
      proto.Ti[(Kc + j) * W + w] = sc[j * W + w];
    }
  proto.cr.assign(reinterpret_cast<const T*>(a.cr), reinterpret_cast<const T*>(a.cr) + Kr * H);
  proto.sr.assign(reinterpret_cast<const T*>(a.sr), reinterpret_cast<const T*>(a.sr) + Kr * H);
  std::vector<double> glow(nb, 0.0);  // c_b - c_last for the gradient's low part
  if (grad != nullptr)
    for (int b = 0; b < last; ++b) glow[b] = gains[b] - gains[last];
  std::vector<double> total(nb, 0.0);

#pragma omp parallel
  {
    Work<T> k = proto;
    k.x.resize(HW), k.low.resize(HW), k.u.resize(grad != nullptr && nb > 2 ? HW : 0);
    k.AB.resize(H * JP), k.U.resize(Kr * JP), k.V.resize(Kr * JP), k.Y.assign(Kr * JP, T(0));
    k.Z.assign(Kr * JP, T(0)), k.Q1.resize(H * JP), k.Q2.resize(H * JP), k.P.resize(H * 2 * Kc);
    std::vector<double> e(nb, 0.0);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      run_slice(k, s + n * HW, t != nullptr ? t + n * HW : nullptr, grad != nullptr ? grad + n * HW : nullptr, bidx,
                gains, glow.data(), nb, a.band_mean, e.data());
#pragma omp critical
    for (int b = 0; b < nb; ++b) total[b] += e[b];
  }
  double* out = reinterpret_cast<double*>(a.energies);
  for (int b = 0; b < nb; ++b) out[b] = total[b];
}

void spectral_loss_cpu(uintptr_t s, uintptr_t t, uintptr_t grad, uintptr_t energies, uintptr_t gains, int dtype,
                       int64_t N, int64_t H, int64_t W, uintptr_t cc, uintptr_t sc, uintptr_t cr, uintptr_t sr,
                       uintptr_t bidx, int64_t Kr, int64_t Kc, int nb, bool band_mean) {
  if (N < 1 || H < 1 || W < 1 || Kr < 1 || Kc < 1 || Kc > W / 2 + 1 || Kr > H || nb < 2)
    throw std::invalid_argument("spectral_loss_cpu: bad sizes");
  if (s == 0 || energies == 0 || cc == 0 || sc == 0 || cr == 0 || sr == 0 || bidx == 0 || (grad != 0 && gains == 0))
    throw std::invalid_argument("spectral_loss_cpu: null pointer");
  Args a{s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb, band_mean};
  py::gil_scoped_release nogil;
  if (dtype == 0)
    spectral_loss_slices<float>(a);
  else if (dtype == 1)
    spectral_loss_slices<double>(a);
  else
    throw std::invalid_argument("spectral_loss_cpu: dtype code must be 0 (float32) or 1 (float64)");
}

#ifdef SDKD_WITH_CUDA
void spectral_loss_cuda(uintptr_t s, uintptr_t t, uintptr_t grad, uintptr_t energies, uintptr_t gains, int dtype,
                        int64_t N, int64_t H, int64_t W, uintptr_t cc, uintptr_t sc, uintptr_t cr, uintptr_t sr,
                        uintptr_t bidx, int64_t Kr, int64_t Kc, int nb, bool band_mean, uintptr_t stream,
                        uintptr_t loss) {
  if (N < 1 || H < 1 || W < 1 || Kr < 1 || Kc < 1 || Kc > W / 2 + 1 || Kr > H || nb < 2 || nb > SDKD_SPECTRAL_MAX_BANDS)
    throw std::invalid_argument("spectral_loss_cuda: bad sizes");
  if (loss != 0 && gains == 0) throw std::invalid_argument("spectral_loss_cuda: a loss output needs the gains");
  int err;
  {
    py::gil_scoped_release nogil;
    err = sdkd_spectral_loss_cuda(reinterpret_cast<const void*>(s), reinterpret_cast<const void*>(t),
                                  reinterpret_cast<void*>(grad), reinterpret_cast<double*>(energies),
                                  reinterpret_cast<const void*>(gains), dtype, N, H, W,
                                  reinterpret_cast<const void*>(cc), reinterpret_cast<const void*>(sc),
                                  reinterpret_cast<const void*>(cr), reinterpret_cast<const void*>(sr),
                                  reinterpret_cast<const int*>(bidx), Kr, Kc, nb, band_mean,
                                  reinterpret_cast<void*>(loss), reinterpret_cast<void*>(stream));
  }
  sdkd_cuda_check(err, "spectral_loss_cuda");
}

int64_t spectral_loss_cuda_smem(int dtype, int64_t H, int64_t W, int64_t Kr, int64_t Kc, int nb) {
  return sdkd_spectral_loss_cuda_smem(dtype, H, W, Kr, Kc, nb);
}

bool is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

void spectral_loss_cuda_fft(uintptr_t s, uintptr_t t, uintptr_t grad, uintptr_t energies, uintptr_t gains, int dtype,
                            int64_t N, int64_t H, int64_t W, uintptr_t bmap, int64_t Kc, int nb, bool band_mean,
                            uintptr_t stream, uintptr_t loss) {
  if (N < 1 || H < 2 || W < 2 || !is_pow2(H) || !is_pow2(W) || Kc < 1 || Kc > W / 2 + 1 || nb < 2 ||
      nb > SDKD_SPECTRAL_MAX_BANDS)
    throw std::invalid_argument("spectral_loss_cuda_fft: bad sizes (H, W powers of two >= 2, 1 <= Kc <= W/2 + 1)");
  if (loss != 0 && gains == 0) throw std::invalid_argument("spectral_loss_cuda_fft: a loss output needs the gains");
  int err;
  {
    py::gil_scoped_release nogil;
    err = sdkd_spectral_loss_cuda_fft(reinterpret_cast<const void*>(s), reinterpret_cast<const void*>(t),
                                      reinterpret_cast<void*>(grad), reinterpret_cast<double*>(energies),
                                      reinterpret_cast<const void*>(gains), dtype, N, H, W,
                                      reinterpret_cast<const int*>(bmap), Kc, nb, band_mean,
                                      reinterpret_cast<void*>(loss), reinterpret_cast<void*>(stream));
  }
  sdkd_cuda_check(err, "spectral_loss_cuda_fft");
}
#endif

}  // namespace

void register_spectral_loss(py::module_& m) {
  m.def("spectral_loss_cpu", &spectral_loss_cpu,
        "Fused SpectralKD energies (+ gradient when grad != 0) on CPU. Pointers are contiguous buffers: s, t "
        "(t = 0: x = s), grad (0: energies only), energies (float64[nb], out), gains (float64[nb]); tables cc, sc "
        "(Kc x W), cr, sr (Kr x H) in the input dtype, bidx int32 (Kr x Kc). dtype 0 = float32, 1 = float64.",
        py::arg("s"), py::arg("t"), py::arg("grad"), py::arg("energies"), py::arg("gains"), py::arg("dtype"),
        py::arg("N"), py::arg("H"), py::arg("W"), py::arg("cc"), py::arg("sc"), py::arg("cr"), py::arg("sr"),
        py::arg("bidx"), py::arg("Kr"), py::arg("Kc"), py::arg("nb"), py::arg("band_mean"));
#ifdef SDKD_WITH_CUDA
  m.def("spectral_loss_cuda", &spectral_loss_cuda,
        "CUDA version of spectral_loss_cpu (device pointers; gains float64[nb]; dtype 0 f32, 1 f64, 2 f16, "
        "3 bf16; stream = cudaStream_t). loss = 0: energies float64[nb] zeroed by the caller and accumulated. "
        "loss != 0: energies float64[nb + 1] (zeroed on the stream here; the last slot is a block counter) and "
        "the kernel also writes the loss, sum_b gains[b] E_b, as one element of the input dtype.",
        py::arg("s"), py::arg("t"), py::arg("grad"), py::arg("energies"), py::arg("gains"), py::arg("dtype"),
        py::arg("N"), py::arg("H"), py::arg("W"), py::arg("cc"), py::arg("sc"), py::arg("cr"), py::arg("sr"),
        py::arg("bidx"), py::arg("Kr"), py::arg("Kc"), py::arg("nb"), py::arg("band_mean"), py::arg("stream"),
        py::arg("loss") = 0);
  m.def("spectral_loss_cuda_smem", &spectral_loss_cuda_smem,
        "Dynamic shared memory (bytes) one CUDA block needs for these sizes.");
  m.def("spectral_loss_cuda_fft", &spectral_loss_cuda_fft,
        "FFT-based CUDA kernel for power-of-two H, W: as spectral_loss_cuda, with bmap (int32 H x Kc, the band of "
        "every bin with kx < Kc) instead of the box tables.",
        py::arg("s"), py::arg("t"), py::arg("grad"), py::arg("energies"), py::arg("gains"), py::arg("dtype"),
        py::arg("N"), py::arg("H"), py::arg("W"), py::arg("bmap"), py::arg("Kc"), py::arg("nb"), py::arg("band_mean"),
        py::arg("stream"), py::arg("loss") = 0);
  m.def("spectral_loss_cuda_fft_smem", &sdkd_spectral_loss_cuda_fft_smem,
        "Dynamic shared memory (bytes) one block of the FFT kernel needs; keep_x=False: its variant that reads x "
        "again (mean reduction only), taken when the other does not fit the device.",
        py::arg("dtype"), py::arg("H"), py::arg("W"), py::arg("Kc"), py::arg("nb"), py::arg("with_grad"),
        py::arg("keep_x") = true);
  m.attr("spectral_loss_max_bands") = SDKD_SPECTRAL_MAX_BANDS;
#endif
}
