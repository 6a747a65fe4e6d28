// Host entry points of the CUDA part of sdkd._C (csrc/cuda/*.cu), callable from plain C++.
// Only declared/bound when the extension is built with SDKD_WITH_CUDA. No CUDA headers here:
// every function returns a cudaError_t value as int (0 = success); streams are passed as void*.
#pragma once

#include <stdexcept>
#include <string>

// cudaGetDeviceCount; returns the error code (35 = cudaErrorInsufficientDriver, 100 = no device).
int sdkd_cuda_device_count(int* count);
// cudaGetErrorName / cudaGetErrorString for a code.
const char* sdkd_cuda_error_name(int err);
const char* sdkd_cuda_error_string(int err);
// The compiled architectures as 10 * major + minor (SASS for each, PTX for the last); returns the count.
int sdkd_cuda_arch_list(int* out, int cap);

// Throw a std::runtime_error (Python RuntimeError) for a failed CUDA call, naming the error.
inline void sdkd_cuda_check(int err, const char* what) {
  if (err != 0) {
    throw std::runtime_error(std::string(what) + " failed: " + sdkd_cuda_error_name(err) + " (" +
                             std::to_string(err) + "): " + sdkd_cuda_error_string(err));
  }
}
