// Host side of the CUDA capped-simplex kernels (device code: capped_simplex_kernel.cuh).
#include "cuda/capped_simplex_kernel.cuh"

#include "capped_simplex.h"

namespace {

using namespace sdkd_capped_simplex_cuda;

template <typename T>
cudaError_t launch_project(const void* y, void* x, int64_t rows, int M, double C, cudaStream_t st) {
  const unsigned bl = blocks_for(rows, kProjectThreads);
  const T* yy = static_cast<const T*>(y);
  T* xx = static_cast<T*>(x);
  const T c = static_cast<T>(C);
  dispatch_project<T>(M, [&](auto kernel) { kernel<<<bl, kProjectThreads, 0, st>>>(yy, xx, rows, M, c); });
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_a2d(const void* G, void* a, void* r, int64_t B, int M, double C, int it, double tol,
                       cudaStream_t st) {
  const unsigned bl = blocks_for(B, kA2dThreads);
  const T* g = static_cast<const T*>(G);
  T* aa = static_cast<T*>(a);
  T* rr = static_cast<T*>(r);
  const T c = static_cast<T>(C), tl = static_cast<T>(tol);
  dispatch_a2d<T>(M, [&](auto kernel) { kernel<<<bl, kA2dThreads, 0, st>>>(g, aa, rr, B, M, c, it, tl); });
  return cudaGetLastError();
}

}  // namespace

int sdkd_capped_simplex_project_cuda(const void* y, void* x, int dtype, int64_t rows, int64_t M, double C,
                                     void* stream) {
  if (rows <= 0) return 0;
  if (M < 1 || M > 64) return static_cast<int>(cudaErrorInvalidValue);
  auto st = static_cast<cudaStream_t>(stream);
  return static_cast<int>(dtype == 1 ? launch_project<double>(y, x, rows, static_cast<int>(M), C, st)
                                     : launch_project<float>(y, x, rows, static_cast<int>(M), C, st));
}

int sdkd_capped_simplex_backward_cuda(const void* x, const void* g, void* gy, int dtype, int64_t rows, int64_t M,
                                      double C, void* stream) {
  if (rows <= 0) return 0;
  auto st = static_cast<cudaStream_t>(stream);
  const int th = kBackwardThreads;
  const unsigned bl = blocks_for(rows, th);
  if (dtype == 1)
    backward_kernel<double><<<bl, th, 0, st>>>(static_cast<const double*>(x), static_cast<const double*>(g),
                                               static_cast<double*>(gy), rows, static_cast<int>(M), C);
  else
    backward_kernel<float><<<bl, th, 0, st>>>(static_cast<const float*>(x), static_cast<const float*>(g),
                                              static_cast<float*>(gy), rows, static_cast<int>(M),
                                              static_cast<float>(C));
  return static_cast<int>(cudaGetLastError());
}

int sdkd_a2d_solve_cuda(const void* G, void* alpha, void* res, int dtype, int64_t B, int64_t M, double C,
                        int64_t max_iter, double tol, void* stream) {
  if (B <= 0) return 0;
  if (M < 1 || M > 64) return static_cast<int>(cudaErrorInvalidValue);
  auto st = static_cast<cudaStream_t>(stream);
  const int it = static_cast<int>(max_iter < (1LL << 30) ? max_iter : (1LL << 30));
  return static_cast<int>(dtype == 1 ? launch_a2d<double>(G, alpha, res, B, static_cast<int>(M), C, it, tol, st)
                                     : launch_a2d<float>(G, alpha, res, B, static_cast<int>(M), C, it, tol, st));
}
