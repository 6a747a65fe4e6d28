// Device code of the fused SpectralKD CUDA kernel: one block per (H, W) slice, everything in shared
// memory. Same algorithm and table layout as csrc/cpu/spectral_loss.cpp (see the comment there):
// truncated-DFT box transform of x = s - t, low-band energies from the box, last band as the
// energy of the spatial residual, gradient 2 V(c_last x + sum_{b<last} (c_b - c_last) P_b x).
// Accumulation in float32 (float64 for float64 inputs); band energies reduced into float64.
// With a loss pointer the last block to finish (a counter after the energy atomics) also writes
// loss = sum_b gains[b] E_b in the input dtype, so a training step needs this one launch and no
// zero-fill / reduction ops around it.
//
// Included by spectral_loss.cu (nvcc) and, with SDKD_CUDA_EMU defined, by the CPU emulation test
// (tests/cuda_emu: every CUDA thread a host thread), which runs this code on machines without a GPU.
#pragma once

#include <cstdint>

#include "cuda/spectral_loss.h"

#ifdef SDKD_CUDA_EMU
#define SDKD_DYNAMIC_SHARED(name) unsigned char* name = emu::dynamic_shared()
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define SDKD_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace sdkd_spectral_cuda {


constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return static_cast<float>(v);
}
#ifndef SDKD_CUDA_EMU
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
#endif

template <typename Tc, typename T>
__device__ __forceinline__ Tc load_c(const T* p, int64_t k) {
  return static_cast<Tc>(to_f(p[k]));
}
template <>
__device__ __forceinline__ double load_c<double, double>(const double* p, int64_t k) {
  return p[k];
}

template <typename T, typename Tc>
__device__ __forceinline__ void store_c(T* p, int64_t k, Tc v) {
  p[k] = static_cast<T>(v);
}
#ifndef SDKD_CUDA_EMU
template <>
__device__ __forceinline__ void store_c<__half, float>(__half* p, int64_t k, float v) {
  p[k] = __float2half_rn(v);
}
template <>
__device__ __forceinline__ void store_c<__nv_bfloat16, float>(__nv_bfloat16* p, int64_t k, float v) {
  p[k] = __float2bfloat16_rn(v);
}
#endif

// The end of every kernel here, per slice. z = x - x_low (residual) and y = c_last x + low-band part (gradient
// base) are read through z_at(k) / y_at(k), k = h W + w. Adds the residual's energy (band_mean: with its
// row terms) to the last band, writes the gradient (band_mean: with its row corrections; rows holds 2 H
// values), reduces the block's band energies into `energies` and, with a loss pointer, the last block to
// finish writes the loss.
template <typename T, typename Tc, typename ZAt, typename YAt>
__device__ __forceinline__ void finish_slice(ZAt z_at, YAt y_at, Tc* rows, T* __restrict__ grad, int64_t base,
                                             int H, int W, bool band_mean, double* e_loc, double e_high,
                                             double* e_sh, double* __restrict__ energies,
                                             const double* __restrict__ gains, int nb, T* __restrict__ loss) {
  const int tid = threadIdx.x;
  const int HW = H * W;
  const int last = nb - 1;
  const bool even_w = (W % 2) == 0;
  const bool with_grad = grad != nullptr;
  if (band_mean) {  // row sums and alternating row sums of z and y, one warp per row
    const int warp = tid / 32, lane = tid % 32;
    for (int h = warp; h < H; h += kThreads / 32) {
      Tc rz = 0, az = 0, ry = 0, ay = 0, zz = 0;
      for (int w = lane; w < W; w += 32) {
        const Tc z = z_at(h * W + w), y = y_at(h * W + w);
        const Tc sg = (w & 1) ? Tc(-1) : Tc(1);
        rz += z;
        az += sg * z;
        zz += z * z;
        ry += y;
        ay += sg * y;
      }
      for (int off = 16; off > 0; off >>= 1) {
        rz += __shfl_xor_sync(0xffffffffu, rz, off);
        az += __shfl_xor_sync(0xffffffffu, az, off);
        zz += __shfl_xor_sync(0xffffffffu, zz, off);
        ry += __shfl_xor_sync(0xffffffffu, ry, off);
        ay += __shfl_xor_sync(0xffffffffu, ay, off);
      }
      if (!even_w) {
        az = 0;
        ay = 0;
      }
      if (lane == 0) {
        rows[h] = ry;
        rows[H + h] = ay;
        e_high += 0.5 * (double(zz) + (double(rz) * rz + double(az) * az) / W);
      }
    }
    __syncthreads();
  }

  if (with_grad) {
    for (int k = tid; k < HW; k += kThreads) {
      const int h = k / W, w = k % W;
      const Tc y = y_at(k);
      const Tc g = band_mean ? y + (rows[h] + ((w & 1) ? -rows[H + h] : rows[H + h])) / Tc(W) : Tc(2) * y;
      store_c<T, Tc>(grad, base + k, g);
    }
  }

  e_loc[last] += e_high;
  // energies: warp reduce, then shared, then one float64 atomic per band and block
  for (int b = 0; b < nb; ++b) {
    double v = e_loc[b];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if ((tid % 32) == 0 && v != 0.0) atomicAdd(&e_sh[b], v);
  }
  __syncthreads();
  if (tid < nb) atomicAdd(energies + tid, e_sh[tid]);
  if (loss == nullptr) return;

  // last block: every block's energies are in (device-scope atomics, ordered before its counter bump)
  __shared__ bool last_block;
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    unsigned int* done = reinterpret_cast<unsigned int*>(energies + nb);
    last_block = atomicAdd(done, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (last_block && tid == 0) {
    __threadfence();
    const volatile double* e = energies;
    double acc = 0.0;
    for (int b = 0; b < nb; ++b) acc += gains[b] * e[b];
    store_c<T, Tc>(loss, 0, static_cast<Tc>(acc));
  }
}

template <typename T, typename Tc>
__global__ void __launch_bounds__(kThreads)
    spectral_loss_kernel(const T* __restrict__ s, const T* __restrict__ t, T* __restrict__ grad,
                         double* __restrict__ energies, const double* __restrict__ gains, int H, int W,
                         const Tc* __restrict__ cc, const Tc* __restrict__ sc, const Tc* __restrict__ cr,
                         const Tc* __restrict__ sr, const int* __restrict__ bidx, int Kr, int Kc, int nb,
                         bool band_mean, T* __restrict__ loss) {
  SDKD_DYNAMIC_SHARED(smem_raw);
  Tc* x = reinterpret_cast<Tc*>(smem_raw);  // x, later y = c_last x + low-band gradient part
  const int HW = H * W;
  Tc* low = x + HW;                         // x_low, later z = x - x_low
  Tc* A = low + HW;                         // H x Kc, later P1 (re)
  Tc* B = A + H * Kc;                       // H x Kc, later P1 (im)
  Tc* Xr = B + H * Kc;                      // Kr x Kc
  Tc* Xi = Xr + Kr * Kc;
  Tc* rows = Xi + Kr * Kc;                  // 4 x H row sums (band_mean)
  const int KcP = Kc | 1;                   // odd row stride of the transposed tables: no bank conflicts
  Tc* ccT = rows + 4 * H;                   // W x KcP: the column tables, transposed
  Tc* scT = ccT + W * KcP;
  Tc* P2r = scT + W * KcP;                  // H x Kc, only with two inverses
  Tc* P2i = P2r + H * Kc;
  __shared__ double e_sh[SDKD_SPECTRAL_MAX_BANDS];

  const int tid = threadIdx.x;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * HW;
  const int last = nb - 1;
  const bool even_w = (W % 2) == 0;
  const bool with_grad = grad != nullptr;
  const bool two = with_grad && nb > 2;
  const Tc scale = Tc(1) / sqrt(Tc(HW));
  double e_loc[SDKD_SPECTRAL_MAX_BANDS];
  for (int b = 0; b < SDKD_SPECTRAL_MAX_BANDS; ++b) e_loc[b] = 0.0;
  if (tid < SDKD_SPECTRAL_MAX_BANDS) e_sh[tid] = 0.0;

  for (int k = tid; k < HW; k += kThreads)
    x[k] = t != nullptr ? load_c<Tc>(s, base + k) - load_c<Tc>(t, base + k) : load_c<Tc>(s, base + k);
  // column tables into shared memory, transposed: in both column passes a warp then reads one row of them
  // (consecutive j, or consecutive w at one j with the odd stride) instead of up to Kc cache lines per load
  for (int k = tid; k < Kc * W; k += kThreads) {
    const int j = k / W, w = k % W;
    ccT[w * KcP + j] = __ldg(cc + k);
    scT[w * KcP + j] = __ldg(sc + k);
  }
  __syncthreads();

  // forward, columns: A = x Cc^T, B = x Sc^T
  for (int k = tid; k < H * Kc; k += kThreads) {
    const int h = k / Kc, j = k % Kc;
    const Tc* xr = x + h * W;
    const Tc* c = ccT + j;
    const Tc* sn = scT + j;
    Tc sa = 0, sb = 0;
    for (int w = 0; w < W; ++w) {
      sa += xr[w] * c[w * KcP];
      sb += xr[w] * sn[w * KcP];
    }
    A[k] = sa;
    B[k] = sb;
  }
  __syncthreads();

  // forward, rows: X = scale (Cr A - Sr B) - i scale (Sr A + Cr B); energies of the low bands
  for (int k = tid; k < Kr * Kc; k += kThreads) {
    const int i = k / Kc, j = k % Kc;
    const Tc* c = cr + static_cast<int64_t>(i) * H;
    const Tc* sn = sr + static_cast<int64_t>(i) * H;
    Tc re = 0, im = 0;
    for (int h = 0; h < H; ++h) {
      const Tc ch = __ldg(c + h), shv = __ldg(sn + h);
      re += ch * A[h * Kc + j] - shv * B[h * Kc + j];
      im -= shv * A[h * Kc + j] + ch * B[h * Kc + j];
    }
    re *= scale;
    im *= scale;
    Xr[k] = re;
    Xi[k] = im;
    const int b = bidx[k];
    const double cw = (j == 0 || (even_w && 2 * j == W)) ? 1.0 : 2.0;
    if (b < last) e_loc[b] += (band_mean ? 1.0 : cw) * (double(re) * re + double(im) * im);
  }
  __syncthreads();

  // inverse, rows: P = sum_i (Cr + i Sr)[i, h] Y[i, j], Y = colw * mask (P1) or colw * gain (P2)
  for (int k = tid; k < H * Kc; k += kThreads) {
    const int h = k / Kc, j = k % Kc;
    const Tc cw = (j == 0 || (even_w && 2 * j == W)) ? Tc(1) : Tc(2);
    Tc p1r = 0, p1i = 0, p2r = 0, p2i = 0;
    for (int i = 0; i < Kr; ++i) {
      const int b = bidx[i * Kc + j];
      if (b >= last) continue;
      const Tc c = __ldg(cr + static_cast<int64_t>(i) * H + h), sn = __ldg(sr + static_cast<int64_t>(i) * H + h);
      const Tc yr = Xr[i * Kc + j] * cw, yi = Xi[i * Kc + j] * cw;
      p1r += c * yr - sn * yi;
      p1i += sn * yr + c * yi;
      if (two) {
        const Tc g = Tc(gains[b] - gains[last]);
        p2r += g * (c * yr - sn * yi);
        p2i += g * (sn * yr + c * yi);
      }
    }
    A[k] = p1r * scale;
    B[k] = p1i * scale;
    if (two) {
      P2r[k] = p2r * scale;
      P2i[k] = p2i * scale;
    }
  }
  __syncthreads();

  // inverse, columns; residual z = x - x_low (into low) and y = c_last x + low-band part (into x)
  const Tc cl = with_grad ? Tc(gains[last]) : Tc(0);
  const Tc c01 = with_grad ? Tc(gains[0] - gains[last]) : Tc(0);
  double e_high = 0.0;  // the last band's energy, in a register (e_loc, indexed at run time, lives in local memory)
  for (int k = tid; k < HW; k += kThreads) {
    const int h = k / W, w = k % W;
    Tc xl = 0, u = 0;
    for (int j = 0; j < Kc; ++j) {
      const Tc c = ccT[w * KcP + j], sn = scT[w * KcP + j];
      xl += A[h * Kc + j] * c - B[h * Kc + j] * sn;
      if (two) u += P2r[h * Kc + j] * c - P2i[h * Kc + j] * sn;
    }
    const Tc xv = x[k];
    const Tc z = xv - xl;
    low[k] = z;
    if (!band_mean) e_high += double(z) * z;
    if (with_grad) x[k] = cl * xv + (two ? u : c01 * xl);
  }
  __syncthreads();

  finish_slice<T, Tc>([&](int k) { return low[k]; }, [&](int k) { return x[k]; }, rows, grad, base, H, W, band_mean,
                      e_loc, e_high, e_sh, energies, gains, nb, loss);
}

inline int64_t smem_bytes(int dtype, int64_t H, int64_t W, int64_t Kr, int64_t Kc, int nb) {
  const int64_t elt = dtype == 1 ? 8 : 4;
  const int64_t n = 2 * H * W + 2 * H * Kc + 2 * Kr * Kc + 4 * H + 2 * W * (Kc | 1) + (nb > 2 ? 2 * H * Kc : 0);
  return n * elt;
}

}  // namespace sdkd_spectral_cuda
