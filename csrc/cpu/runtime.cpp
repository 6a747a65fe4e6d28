#ifdef _OPENMP
#include <omp.h>
#endif

int sdkd_openmp_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
