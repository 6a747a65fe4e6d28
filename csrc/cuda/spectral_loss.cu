// Host side of the fused SpectralKD CUDA kernel (device code: spectral_loss_kernel.cuh): launch
// configuration, dynamic shared memory, the energies/counter reset when the kernel writes the loss.
#include "cuda/spectral_loss_fft_kernel.cuh"
#include "cuda/spectral_loss_kernel.cuh"

namespace {

using sdkd_spectral_cuda::fft_smem_bytes;
using sdkd_spectral_cuda::kThreads;
using sdkd_spectral_cuda::smem_bytes;
using sdkd_spectral_cuda::spectral_loss_fft_kernel;
using sdkd_spectral_cuda::spectral_loss_kernel;

// Before a launch: allow `smem` bytes of dynamic shared memory and, when the kernel writes the loss, zero the
// energies and the block counter after them on the stream.
template <typename Kernel>
cudaError_t prepare(Kernel kernel, int64_t smem, double* energies, int nb, const void* loss, cudaStream_t stream) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err == cudaSuccess && loss != nullptr)
    err = cudaMemsetAsync(energies, 0, static_cast<size_t>(nb + 1) * sizeof(double), stream);
  return err;
}

template <typename T, typename Tc>
int launch(const void* s, const void* t, void* grad, double* energies, const void* gains, int64_t N, int64_t H,
           int64_t W, const void* cc, const void* sc, const void* cr, const void* sr, const int* bidx, int64_t Kr,
           int64_t Kc, int nb, bool band_mean, void* loss, int dtype, cudaStream_t stream) {
  const int64_t smem = smem_bytes(dtype, H, W, Kr, Kc, nb);
  auto kernel = spectral_loss_kernel<T, Tc>;
  const cudaError_t err = prepare(kernel, smem, energies, nb, loss, stream);
  if (err != cudaSuccess) return static_cast<int>(err);
  kernel<<<static_cast<unsigned>(N), kThreads, static_cast<size_t>(smem), stream>>>(
      static_cast<const T*>(s), static_cast<const T*>(t), static_cast<T*>(grad), energies,
      static_cast<const double*>(gains), static_cast<int>(H), static_cast<int>(W), static_cast<const Tc*>(cc),
      static_cast<const Tc*>(sc), static_cast<const Tc*>(cr), static_cast<const Tc*>(sr), bidx, static_cast<int>(Kr),
      static_cast<int>(Kc), nb, band_mean, static_cast<T*>(loss));
  return static_cast<int>(cudaGetLastError());
}

int log2_exact(int64_t n) {
  int l = 0;
  while ((int64_t{1} << l) < n) ++l;
  return (int64_t{1} << l) == n ? l : -1;
}

// The opt-in shared-memory limit of one block on the current device (0 when it cannot be read).
int64_t device_smem_limit() {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) return 0;
  return v;
}

template <typename T, typename Tc>
int launch_fft(const void* s, const void* t, void* grad, double* energies, const void* gains, int64_t N, int64_t H,
               int64_t W, const int* bmap, int64_t Kc, int nb, bool band_mean, void* loss, int dtype,
               cudaStream_t stream) {
  // x kept in shared memory when it fits (and always for band_mean), else read again in the residual pass
  const bool with_grad = grad != nullptr;
  const bool keep_x = band_mean || fft_smem_bytes(dtype, H, W, Kc, nb, with_grad, true) <= device_smem_limit();
  const int64_t smem = fft_smem_bytes(dtype, H, W, Kc, nb, with_grad, keep_x);
  auto kernel = keep_x ? spectral_loss_fft_kernel<T, Tc, true> : spectral_loss_fft_kernel<T, Tc, false>;
  const cudaError_t err = prepare(kernel, smem, energies, nb, loss, stream);
  if (err != cudaSuccess) return static_cast<int>(err);
  kernel<<<static_cast<unsigned>(N), kThreads, static_cast<size_t>(smem), stream>>>(
      static_cast<const T*>(s), static_cast<const T*>(t), static_cast<T*>(grad), energies,
      static_cast<const double*>(gains), log2_exact(H), log2_exact(W), bmap, static_cast<int>(Kc), nb, band_mean,
      static_cast<T*>(loss));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int64_t sdkd_spectral_loss_cuda_fft_smem(int dtype, int64_t H, int64_t W, int64_t Kc, int nb, bool with_grad,
                                         bool keep_x) {
  return fft_smem_bytes(dtype, H, W, Kc, nb, with_grad, keep_x);
}

int sdkd_spectral_loss_cuda_fft(const void* s, const void* t, void* grad, double* energies, const void* gains,
                                int dtype, int64_t N, int64_t H, int64_t W, const int* bmap, int64_t Kc, int nb,
                                bool band_mean, void* loss, void* stream) {
  if (log2_exact(H) < 1 || log2_exact(W) < 1) return static_cast<int>(cudaErrorInvalidValue);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0:
      return launch_fft<float, float>(s, t, grad, energies, gains, N, H, W, bmap, Kc, nb, band_mean, loss, dtype, st);
    case 1:
      return launch_fft<double, double>(s, t, grad, energies, gains, N, H, W, bmap, Kc, nb, band_mean, loss, dtype,
                                        st);
    case 2:
      return launch_fft<__half, float>(s, t, grad, energies, gains, N, H, W, bmap, Kc, nb, band_mean, loss, dtype,
                                       st);
    case 3:
      return launch_fft<__nv_bfloat16, float>(s, t, grad, energies, gains, N, H, W, bmap, Kc, nb, band_mean, loss,
                                              dtype, st);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

int64_t sdkd_spectral_loss_cuda_smem(int dtype, int64_t H, int64_t W, int64_t Kr, int64_t Kc, int nb) {
  return smem_bytes(dtype, H, W, Kr, Kc, nb);
}

int sdkd_spectral_loss_cuda(const void* s, const void* t, void* grad, double* energies, const void* gains, int dtype,
                            int64_t N, int64_t H, int64_t W, const void* cc, const void* sc, const void* cr,
                            const void* sr, const int* bidx, int64_t Kr, int64_t Kc, int nb, bool band_mean,
                            void* loss, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0:
      return launch<float, float>(s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb, band_mean,
                                  loss, dtype, st);
    case 1:
      return launch<double, double>(s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb,
                                    band_mean, loss, dtype, st);
    case 2:
      return launch<__half, float>(s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb, band_mean,
                                   loss, dtype, st);
    case 3:
      return launch<__nv_bfloat16, float>(s, t, grad, energies, gains, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb,
                                          band_mean, loss, dtype, st);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}
