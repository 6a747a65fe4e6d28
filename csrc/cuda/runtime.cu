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
