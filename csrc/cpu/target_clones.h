// SDKD_CLONES: compile a CPU hot loop twice, AVX2/FMA and baseline x86-64, and let the loader pick the clone the
// CPU supports (a portable binary, no -march=native). `flatten` inlines the helpers into each clone.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SDKD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define SDKD_CLONES
#endif
