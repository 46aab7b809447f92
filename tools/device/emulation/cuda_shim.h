// A small SIMT emulator so that the ELSA CUDA kernels (csrc/common/cuda/elsa_kernel.cuh) and
// their launchers (csrc/pytorch/cuda/elsa_cuda.cu) compile as host C++ and run on the CPU.
// Every CUDA thread of a block is a std::thread; blocks run one after another, so __shared__
// (a function-local static) is private to the running block. __syncthreads is a block-wide
// barrier and __shfl_down_sync exchanges through a per-warp buffer between two warp barriers,
// i.e. the semantics the kernels rely on. For verification only: slow, and no memory model.
#pragma once

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = int;

namespace emu {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::unique_ptr<std::barrier<>> block_barrier;
struct Warp {
  std::barrier<> bar{32};
  double buf[32];
};
inline std::vector<std::unique_ptr<Warp>> warps;
inline int64_t launches = 0;
inline dim3 to_dim3(dim3 d) { return d; }
inline dim3 to_dim3(int64_t n) { return dim3(static_cast<unsigned>(n)); }

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, Args&&... args) {
  if (block.x % 32 != 0 || block.y != 1 || block.z != 1) throw std::runtime_error("emu: block");
  ++launches;
  grid_dim = grid;
  block_dim = block;
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      block_barrier = std::make_unique<std::barrier<>>(block.x);
      warps.clear();
      for (unsigned w = 0; w < block.x / 32; ++w) warps.push_back(std::make_unique<Warp>());
      std::vector<std::thread> threads;
      threads.reserve(block.x);
      for (unsigned t = 0; t < block.x; ++t)
        threads.emplace_back([&, t] {
          thread_idx = dim3(t);
          block_idx = dim3(bx, by);
          kernel(args...);
        });
      for (auto& th : threads) th.join();
    }
  }
}
}  // namespace emu

#define threadIdx emu::thread_idx
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define gridDim emu::grid_dim
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, int offset) {
  emu::Warp& w = *emu::warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  w.buf[lane] = static_cast<double>(v);
  w.bar.arrive_and_wait();
  const T r = lane + offset < 32 ? static_cast<T>(w.buf[lane + offset]) : v;
  w.bar.arrive_and_wait();
  return r;
}

using std::max;
using std::min;

#define ELSA_DEVICE_GUARD(t) (void)0
#define ELSA_CURRENT_STREAM() 0
#define ELSA_LAUNCH(kernel, grid, block, stream, ...) \
  emu::launch(kernel, emu::to_dim3(grid), emu::to_dim3(block), __VA_ARGS__)
