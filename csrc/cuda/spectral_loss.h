// Host entry points of the CUDA SpectralKD kernel (csrc/cuda/spectral_loss.cu). No CUDA headers:
// returns a cudaError_t value as int (0 = success); stream is a cudaStream_t passed as void*.
#pragma once

#include <cstdint>

#define SDKD_SPECTRAL_MAX_BANDS 8

// One block per (H, W) slice. s, t (t may be null: x = s), grad (null: energies only) have the input
// dtype (0 float32, 1 float64, 2 float16, 3 bfloat16); compute is float32 (float64 for float64
// inputs); tables cc, sc (Kc x W), cr, sr (Kr x H) are in the compute dtype; bidx is int32 (Kr x Kc);
// gains are float64[nb]. loss null: energies float64[nb] must be zeroed by the caller (accumulated
// atomically). loss non-null (needs gains): energies has nb + 1 float64 slots (the last one holds the
// block counter), zeroed here on the stream, and the kernel also writes loss = sum_b gains[b] E_b as
// one element of the input dtype.
int sdkd_spectral_loss_cuda(const void* s, const void* t, void* grad, double* energies, const void* gains, int dtype,
                            int64_t N, int64_t H, int64_t W, const void* cc, const void* sc, const void* cr,
                            const void* sr, const int* bidx, int64_t Kr, int64_t Kc, int nb, bool band_mean,
                            void* loss, void* stream);

// Dynamic shared memory one block needs (bytes); the Python side compares it with the device limit.
int64_t sdkd_spectral_loss_cuda_smem(int dtype, int64_t H, int64_t W, int64_t Kr, int64_t Kc, int nb);

// FFT-based kernel for power-of-two H, W >= 2 (csrc/cuda/spectral_loss_fft_kernel.cuh): same pointers,
// dtypes and loss / energies contract as sdkd_spectral_loss_cuda; bmap is the band of every bin with
// kx < Kc, int32 (H x Kc), instead of the box tables.
int sdkd_spectral_loss_cuda_fft(const void* s, const void* t, void* grad, double* energies, const void* gains,
                                int dtype, int64_t N, int64_t H, int64_t W, const int* bmap, int64_t Kc, int nb,
                                bool band_mean, void* loss, void* stream);

// Dynamic shared memory (bytes) one block of the FFT kernel needs; keep_x = false: the variant that reads x
// again instead of keeping it ("mean" only), which the launch takes when the other does not fit the device.
int64_t sdkd_spectral_loss_cuda_fft_smem(int dtype, int64_t H, int64_t W, int64_t Kc, int nb, bool with_grad,
                                         bool keep_x);
