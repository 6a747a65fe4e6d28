// Runtime queries of sdkd._C: OpenMP threads, whether CUDA was compiled in, CUDA device status.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef SDKD_WITH_CUDA
#include "sdkd_cuda.h"
#endif

namespace py = pybind11;

int sdkd_openmp_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// (device count, error code, error name); error code 0 means the runtime answered.
static std::tuple<int, int, std::string> cuda_status() {
#ifdef SDKD_WITH_CUDA
  int count = 0;
  int err = sdkd_cuda_device_count(&count);
  return {count, err, err == 0 ? std::string("cudaSuccess") : std::string(sdkd_cuda_error_name(err))};
#else
  return {0, -1, std::string("built without CUDA")};
#endif
}

// Compiled CUDA architectures (10 * major + minor; SASS for each, PTX for the largest); empty without CUDA.
static std::vector<int> cuda_archs() {
#ifdef SDKD_WITH_CUDA
  int buf[64];
  int n = sdkd_cuda_arch_list(buf, 64);
  return std::vector<int>(buf, buf + n);
#else
  return {};
#endif
}

void register_runtime(py::module_& m) {
  m.def("openmp_threads", &sdkd_openmp_threads, "Number of OpenMP threads the CPU kernels use");
  m.def(
      "has_cuda",
      []() {
#ifdef SDKD_WITH_CUDA
        return true;
#else
        return false;
#endif
      },
      "Whether the CUDA part was compiled in");
  m.def("cuda_status", &cuda_status,
        "(device_count, error_code, error_name) from cudaGetDeviceCount; error_code -1 when built without CUDA");
  m.def("cuda_archs", &cuda_archs,
        "Compiled CUDA architectures as 10*major+minor (SASS for each, PTX for the largest); [] without CUDA");
}
