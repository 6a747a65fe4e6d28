// CUDA runtime queries for the Python side (is a GPU usable? which error if not?).
#include <cuda_runtime.h>

#include "sdkd_cuda.h"

int sdkd_cuda_device_count(int* count) {
  *count = 0;
  cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) {
    *count = 0;
    cudaGetLastError();  // clear the sticky-free error so later calls report their own
  }
  return static_cast<int>(err);
}

const char* sdkd_cuda_error_name(int err) { return cudaGetErrorName(static_cast<cudaError_t>(err)); }

const char* sdkd_cuda_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

// The architectures this file was compiled for (nvcc's __CUDA_ARCH_LIST__, e.g. 800,900; setup.py builds SASS
// for each and PTX for the last), as 10 * major + minor. Returns how many were written (at most cap).
int sdkd_cuda_arch_list(int* out, int cap) {
#ifdef __CUDA_ARCH_LIST__
  const int archs[] = {__CUDA_ARCH_LIST__};
  int n = 0;
  for (int a : archs) {
    if (n < cap) out[n++] = a / 10;
  }
  return n;
#else
  (void)out;
  (void)cap;
  return 0;  // an nvcc older than 11.5: unknown (the Python probe then trusts the launch)
#endif
}
