// The CUDA capped-simplex kernels (csrc/cuda/capped_simplex_kernel.cuh) built for the CPU emulation in
// emu.h, with C entry points that mirror the host launches in csrc/cuda/capped_simplex.cu (same kernel
// choice per M through the shared dispatch helpers, same block sizes). Loaded by tests/test_cuda_emulated.py.
#define SDKD_CUDA_EMU 1
#include "emu.h"

#include "cuda/capped_simplex_kernel.cuh"

using namespace sdkd_capped_simplex_cuda;

template <typename T>
static void project(const void* y, void* x, int64_t rows, int M, double C) {
  const T* yy = static_cast<const T*>(y);
  T* xx = static_cast<T*>(x);
  const T c = static_cast<T>(C);
  const unsigned bl = blocks_for(rows, kProjectThreads);
  dispatch_project<T>(M, [&](auto kernel) { emu::launch(kernel, bl, kProjectThreads, 0, yy, xx, rows, M, c); });
}

template <typename T>
static void backward(const void* x, const void* g, void* gy, int64_t rows, int M, double C) {
  emu::launch(backward_kernel<T>, blocks_for(rows, kBackwardThreads), kBackwardThreads, 0, static_cast<const T*>(x),
              static_cast<const T*>(g), static_cast<T*>(gy), rows, M, static_cast<T>(C));
}

template <typename T>
static void a2d(const void* G, void* a, void* r, int64_t B, int M, double C, int it, double tol) {
  const T* g = static_cast<const T*>(G);
  T* aa = static_cast<T*>(a);
  T* rr = static_cast<T*>(r);
  const T c = static_cast<T>(C), tl = static_cast<T>(tol);
  const unsigned bl = blocks_for(B, kA2dThreads);
  dispatch_a2d<T>(M, [&](auto kernel) { emu::launch(kernel, bl, kA2dThreads, 0, g, aa, rr, B, M, c, it, tl); });
}

extern "C" {
int sdkd_emu_capped_simplex_project(const void* y, void* x, int dtype, int64_t rows, int64_t M, double C) {
  if (M < 1 || M > 64) return 1;
  dtype == 1 ? project<double>(y, x, rows, static_cast<int>(M), C) : project<float>(y, x, rows, static_cast<int>(M), C);
  return 0;
}

int sdkd_emu_capped_simplex_backward(const void* x, const void* g, void* gy, int dtype, int64_t rows, int64_t M,
                                     double C) {
  dtype == 1 ? backward<double>(x, g, gy, rows, static_cast<int>(M), C)
             : backward<float>(x, g, gy, rows, static_cast<int>(M), C);
  return 0;
}

int sdkd_emu_a2d_solve(const void* G, void* alpha, void* res, int dtype, int64_t B, int64_t M, double C,
                       int64_t max_iter, double tol) {
  if (M < 1 || M > 64) return 1;
  const int it = static_cast<int>(max_iter < (1LL << 30) ? max_iter : (1LL << 30));
  dtype == 1 ? a2d<double>(G, alpha, res, B, static_cast<int>(M), C, it, tol)
             : a2d<float>(G, alpha, res, B, static_cast<int>(M), C, it, tol);
  return 0;
}
}
