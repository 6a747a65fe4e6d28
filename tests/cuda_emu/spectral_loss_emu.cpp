// The CUDA SpectralKD kernel (csrc/cuda/spectral_loss_kernel.cuh) built for the CPU emulation in emu.h,
// with a C entry point that mirrors the host launch in csrc/cuda/spectral_loss.cu (float32 / float64;
// the 16-bit types need CUDA's headers). Built and loaded by tests/test_cuda_emulated.py.
#define SDKD_CUDA_EMU 1
#include "emu.h"

#include "cuda/spectral_loss_fft_kernel.cuh"
#include "cuda/spectral_loss_kernel.cuh"

using sdkd_spectral_cuda::fft_smem_bytes;
using sdkd_spectral_cuda::kThreads;
using sdkd_spectral_cuda::smem_bytes;
using sdkd_spectral_cuda::spectral_loss_fft_kernel;
using sdkd_spectral_cuda::spectral_loss_kernel;

template <typename T>
static void run(const void* s, const void* t, void* grad, double* energies, const double* gains, int64_t N, int64_t H,
                int64_t W, const void* cc, const void* sc, const void* cr, const void* sr, const int* bidx, int64_t Kr,
                int64_t Kc, int nb, bool band_mean, void* loss, int dtype) {
  if (loss != nullptr) std::memset(energies, 0, static_cast<size_t>(nb + 1) * sizeof(double));
  emu::launch(spectral_loss_kernel<T, T>, static_cast<unsigned>(N), kThreads,
              static_cast<size_t>(smem_bytes(dtype, H, W, Kr, Kc, nb)), static_cast<const T*>(s),
              static_cast<const T*>(t), static_cast<T*>(grad), energies, gains, static_cast<int>(H),
              static_cast<int>(W), static_cast<const T*>(cc), static_cast<const T*>(sc), static_cast<const T*>(cr),
              static_cast<const T*>(sr), bidx, static_cast<int>(Kr), static_cast<int>(Kc), nb, band_mean,
              static_cast<T*>(loss));
}

extern "C" int sdkd_emu_spectral_loss(const void* s, const void* t, void* grad, double* energies, const double* gains,
                                      int dtype, int64_t N, int64_t H, int64_t W, const void* cc, const void* sc,
                                      const void* cr, const void* sr, const int* bidx, int64_t Kr, int64_t Kc, int nb,
                                      int band_mean, void* loss) {
  if (dtype == 0) {
    run<float>(s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb, band_mean != 0, loss, dtype);
  } else if (dtype == 1) {
    run<double>(s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb, band_mean != 0, loss, dtype);
  } else {
    return 1;
  }
  return 0;
}

static int log2_exact(int64_t n) {
  int l = 0;
  while ((int64_t{1} << l) < n) ++l;
  return (int64_t{1} << l) == n ? l : -1;
}

template <typename T>
static void run_fft(const void* s, const void* t, void* grad, double* energies, const double* gains, int64_t N,
                    int64_t H, int64_t W, const int* bmap, int64_t Kc, int nb, bool band_mean, void* loss, int dtype,
                    bool keep_x) {
  if (loss != nullptr) std::memset(energies, 0, static_cast<size_t>(nb + 1) * sizeof(double));
  const auto smem = static_cast<size_t>(fft_smem_bytes(dtype, H, W, Kc, nb, grad != nullptr, keep_x));
  emu::launch(keep_x ? spectral_loss_fft_kernel<T, T, true> : spectral_loss_fft_kernel<T, T, false>,
              static_cast<unsigned>(N), kThreads, smem, static_cast<const T*>(s), static_cast<const T*>(t), static_cast<T*>(grad), energies, gains, log2_exact(H), log2_exact(W), bmap,
              static_cast<int>(Kc), nb, band_mean, static_cast<T*>(loss));
}

extern "C" int sdkd_emu_spectral_loss_fft(const void* s, const void* t, void* grad, double* energies,
                                          const double* gains, int dtype, int64_t N, int64_t H, int64_t W,
                                          const int* bmap, int64_t Kc, int nb, int band_mean, void* loss,
                                          int keep_x) {
  if (log2_exact(H) < 1 || log2_exact(W) < 1) return 2;
  if (band_mean != 0 && keep_x == 0) return 3;  // the host never launches that combination
  if (dtype == 0) {
    run_fft<float>(s, t, grad, energies, gains, N, H, W, bmap, Kc, nb, band_mean != 0, loss, dtype, keep_x != 0);
  } else if (dtype == 1) {
    run_fft<double>(s, t, grad, energies, gains, N, H, W, bmap, Kc, nb, band_mean != 0, loss, dtype, keep_x != 0);
  } else {
    return 1;
  }
  return 0;
}

extern "C" int64_t sdkd_emu_spectral_loss_smem(int dtype, int64_t H, int64_t W, int64_t Kr, int64_t Kc, int nb) {
  return smem_bytes(dtype, H, W, Kr, Kc, nb);
}

extern "C" int64_t sdkd_emu_spectral_loss_fft_smem(int dtype, int64_t H, int64_t W, int64_t Kc, int nb, int with_grad,
                                                   int keep_x) {
  return fft_smem_bytes(dtype, H, W, Kc, nb, with_grad != 0, keep_x != 0);
}
