// pybind11 entry point of sdkd._C. Each op registers its functions from its own file.
#include <pybind11/pybind11.h>

namespace py = pybind11;

int sdkd_openmp_threads();

PYBIND11_MODULE(_C, m) {
  m.doc() = "sdkd compiled kernels (torch-free; raw pointers, sizes and strides)";
  m.def("openmp_threads", &sdkd_openmp_threads, "Number of OpenMP threads the CPU kernels use");
}
