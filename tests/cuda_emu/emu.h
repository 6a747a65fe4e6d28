// A small CPU emulation of the CUDA execution model, enough to run sdkd's CUDA kernels on a machine
// without a GPU (tests only): every CUDA thread of a block is a host thread, blocks run one after
// another, __syncthreads is a barrier over the block, warp shuffles exchange through a per-warp slot
// array between two barriers, atomics are std::atomic_ref. It checks the kernels' indexing,
// synchronisation and arithmetic against the references; it says nothing about their speed, and it
// runs blocks in order, so it cannot expose races between blocks.
//
// Kernel code sees: threadIdx, blockIdx, blockDim, gridDim, __syncthreads, __shfl_xor_sync,
// atomicAdd (double, unsigned int), __threadfence, __ldg, min / max (fmin / fmax for floating point,
// as in CUDA), __int_as_float, __longlong_as_double, sincospi, bit reversal (emu_brev for __brev, which
// device code spells through a macro), and __shared__ (a function-local static:
// shared by the block because one block runs at a time). Dynamic shared memory comes from
// emu::dynamic_shared(), filled with 0xFF bytes (NaN as floats) so that reading it before writing
// shows up in the results. A launch that runs past SDKD_EMU_TIMEOUT seconds (300) aborts the process: a
// barrier some threads never reach deadlocks, and CI should crash rather than hang.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct emu_dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local emu_dim3 threadIdx;
inline thread_local emu_dim3 blockIdx;
inline emu_dim3 blockDim;
inline emu_dim3 gridDim;

namespace emu {

constexpr int kWarp = 32;

struct Warp {
  std::barrier<> bar{kWarp};
  alignas(8) unsigned char slots[kWarp][8];
};

struct Block {
  explicit Block(unsigned threads, size_t smem)
      : bar(static_cast<std::ptrdiff_t>(threads)), shared(smem + 16, 0xFF), warps((threads + kWarp - 1) / kWarp) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::barrier<> bar;
  std::vector<unsigned char> shared;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline Block* current_block = nullptr;  // one block at a time

inline unsigned char* dynamic_shared() {
  auto addr = reinterpret_cast<std::uintptr_t>(current_block->shared.data());
  return reinterpret_cast<unsigned char*>((addr + 15) & ~std::uintptr_t(15));
}

// Run kernel(args...) over grid x block threads; every block in its own set of host threads, in order.
// Aborts the process when a launch runs past `seconds` (a kernel whose threads miss a barrier deadlocks here,
// where the GPU would hang too): a crash in the test run instead of a CI job that never ends.
class Watchdog {
 public:
  explicit Watchdog(int seconds) : thread_([this, seconds] {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "cuda_emu: a launch ran past %d s (threads stuck at a barrier?); aborting\n", seconds);
        std::abort();
      }
    }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the members it uses exist
};

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), unsigned grid, unsigned block, size_t smem, Args... args) {
  const char* limit = std::getenv("SDKD_EMU_TIMEOUT");  // seconds, default 300
  Watchdog watchdog(limit != nullptr ? std::atoi(limit) : 300);
  gridDim = emu_dim3{grid, 1, 1};
  blockDim = emu_dim3{block, 1, 1};
  for (unsigned b = 0; b < grid; ++b) {
    Block state(block, smem);
    current_block = &state;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
      threads.emplace_back([=] {
        threadIdx = emu_dim3{t, 1, 1};
        blockIdx = emu_dim3{b, 1, 1};
        kernel(static_cast<KArgs>(args)...);
      });
    }
    for (auto& th : threads) th.join();
    current_block = nullptr;
  }
}

}  // namespace emu

inline void __syncthreads() { emu::current_block->bar.arrive_and_wait(); }

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask: every lane takes part here*/, T v, int lane_mask) {
  static_assert(sizeof(T) <= 8, "emulated shuffles move up to 8 bytes");
  emu::Warp& w = *emu::current_block->warps[threadIdx.x / emu::kWarp];
  const unsigned lane = threadIdx.x % emu::kWarp;
  std::memcpy(w.slots[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T out;
  std::memcpy(&out, w.slots[lane ^ static_cast<unsigned>(lane_mask)], sizeof(T));
  w.bar.arrive_and_wait();
  return out;
}

inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
  return std::atomic_ref<unsigned int>(*p).fetch_add(v);
}

// CUDA's math functions have float overloads (the C library's take double): bring in std's
using std::fabs;
using std::sqrt;

// CUDA's device min / max: fminf / fmaxf semantics for floating point (a NaN operand loses)
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline int min(int a, int b) { return std::min(a, b); }
inline int max(int a, int b) { return std::max(a, b); }

inline unsigned emu_brev(unsigned v) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i, v >>= 1) r = (r << 1) | (v & 1u);
  return r;
}

inline void sincospi(double x, double* s, double* c) {
  *s = std::sin(M_PI * x);
  *c = std::cos(M_PI * x);
}

inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline double __longlong_as_double(long long v) { return std::bit_cast<double>(v); }
