// Host entry points of the CUDA capped-simplex kernels (csrc/cuda/capped_simplex.cu). No CUDA headers:
// each returns a cudaError_t value as int (0 = success); stream is a cudaStream_t passed as void*.
// dtype: 0 = float32, 1 = float64. Buffers are contiguous; M <= 64.
#pragma once

#include <cstdint>

// Project the rows of y (rows x M) onto {x : sum x = 1, 0 <= x <= C}; one thread per row.
int sdkd_capped_simplex_project_cuda(const void* y, void* x, int dtype, int64_t rows, int64_t M, double C,
                                     void* stream);
// Closed-form VJP: gy = g - mean_F(g) on F = {0 < x < C}, 0 elsewhere.
int sdkd_capped_simplex_backward_cuda(const void* x, const void* g, void* gy, int dtype, int64_t rows, int64_t M,
                                      double C, void* stream);
// A2D weights for B Gram matrices (B x M x M): alpha (B x M) and KKT residual (B); one thread per problem.
int sdkd_a2d_solve_cuda(const void* G, void* alpha, void* res, int dtype, int64_t B, int64_t M, double C,
                        int64_t max_iter, double tol, void* stream);
