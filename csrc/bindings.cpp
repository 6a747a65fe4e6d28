// pybind11 entry point of sdkd._C. Each op registers its functions from its own file
// (`void register_<op>(pybind11::module_& m);`, declared and called here, one line each).
#include <pybind11/pybind11.h>

namespace py = pybind11;

void register_runtime(py::module_& m);
void register_spectral_loss(py::module_& m);
void register_spectral_loss_fft(py::module_& m);
void register_capped_simplex(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "sdkd compiled kernels (torch-free; raw pointers, sizes and strides)";
  register_runtime(m);
  register_spectral_loss(m);
  register_spectral_loss_fft(m);
  register_capped_simplex(m);
}
