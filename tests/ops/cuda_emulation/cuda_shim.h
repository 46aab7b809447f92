// A small SIMT emulator so that the ELSA CUDA kernels (csrc/common/cuda/elsa_kernel.cuh) and
// their launchers (csrc/pytorch/cuda/elsa_cuda.cu) compile as host C++ and run on the CPU.
//
// Every CUDA thread of a block is a fiber (its own stack) on the calling OS thread; blocks run one
// after another, so __shared__ (a function-local static) is private to the running block. A
// thread runs until it finishes or reaches a barrier: __syncthreads waits for all threads of
// the block, __shfl_down_sync exchanges through a per-warp buffer between two warp barriers.
// Cheaper emulation where threads need no barrier: the first block of every launch runs as
// fibers; if none of its threads reached a barrier, the other blocks run their threads as plain
// calls one after another (no context switch at all). A barrier met in that mode anyway (a
// data-dependent barrier) stops the launch with an error rather than giving a wrong answer.
// Strict where CUDA is undefined: a barrier that not every thread of its block (or warp)
// reaches is reported as a deadlock, instead of hanging. For verification only: no memory
// model, no timing.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using cudaStream_t = int;

namespace emu {

inline dim3 thread_idx, block_idx, block_dim, grid_dim;
inline int64_t launches = 0;
// Set by a test to switch on one of the planted bugs (0: none): the ELSA_PLANT switches that the
// emulator's build writes into its copy of the kernels (plants.py).
inline int planted_bug = 0;

constexpr size_t kStackBytes = 64 * 1024;

struct Fiber {
  std::unique_ptr<char[]> stack{new char[kStackBytes]};
  bool done = false;
  int wait_group = -1;  // -1 runnable; else the barrier group it waits at
#if defined(__x86_64__)
  void* sp = nullptr;  // saved stack pointer while suspended
#else
  ucontext_t ctx;
#endif
};

struct Block {
  std::vector<std::unique_ptr<Fiber>> fibers;
  // barrier groups: 0 = the block, 1 + w = warp w
  std::vector<int> arrived;
  unsigned current = 0;
  std::function<void()>* body = nullptr;
#if defined(__x86_64__)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler;
#endif
};
inline Block block;

// Warp-shuffle buffers, one per warp of the running block.
inline std::vector<double> shfl_buf;

// ---- switching between the scheduler and the fibers
#if defined(__x86_64__)
// Pushes the callee-saved registers of the System V ABI, stores the stack pointer in *save and
// continues on the stack `next`, saved the same way. glibc's swapcontext also saves the
// signal mask, a system call on every switch; the barrier-heavy ghost reduction switches
// millions of times, so this is what keeps the CI test short. Hidden: not exported.
extern "C" void emu_switch_stack(void** save, void* next);
asm(".text\n"
    ".globl emu_switch_stack\n"
    ".hidden emu_switch_stack\n"
    ".type emu_switch_stack, @function\n"
    "emu_switch_stack:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emu_switch_stack, .-emu_switch_stack\n");

[[noreturn]] inline void fiber_entry() {
  (*block.body)();
  block.fibers[block.current]->done = true;
  void* unused;
  emu_switch_stack(&unused, block.scheduler_sp);  // never resumed
  __builtin_unreachable();
}

inline void fiber_init(Fiber& f) {
  // A fresh stack that emu_switch_stack "returns" into fiber_entry from: six zero registers,
  // then fiber_entry's address at a 16-byte boundary, so that fiber_entry starts with the
  // stack alignment of a function that was called.
  auto top = reinterpret_cast<uintptr_t>(f.stack.get() + kStackBytes) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;  // fiber_entry's return address: it never returns
  *--sp = reinterpret_cast<void*>(&fiber_entry);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  f.sp = sp;
}
inline void fiber_resume(Fiber& f) { emu_switch_stack(&block.scheduler_sp, f.sp); }
inline void fiber_suspend(Fiber& f) { emu_switch_stack(&f.sp, block.scheduler_sp); }
#else
inline void fiber_main() {
  (*block.body)();
  block.fibers[block.current]->done = true;
  // returning resumes uc_link, the scheduler
}
inline void fiber_init(Fiber& f) {
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = f.stack.get();
  f.ctx.uc_stack.ss_size = kStackBytes;
  f.ctx.uc_link = &block.scheduler;
  makecontext(&f.ctx, fiber_main, 0);
}
inline void fiber_resume(Fiber& f) { swapcontext(&block.scheduler, &f.ctx); }
inline void fiber_suspend(Fiber& f) { swapcontext(&f.ctx, &block.scheduler); }
#endif

inline bool direct_mode = false;  // threads run as plain calls (no fibers)
inline bool saw_barrier = false;  // a barrier was reached in the current launch

// Arrive at barrier `group` of `size` threads; returns when all of them have arrived.
inline void arrive(int group, int size) {
  if (direct_mode)
    throw std::runtime_error(
        "emu: a barrier in a block run without fibers: the kernel's first block reached no "
        "barrier, a later one did (data-dependent barrier)");
  saw_barrier = true;
  if (++block.arrived[group] == size) {
    block.arrived[group] = 0;
    for (auto& f : block.fibers)
      if (f->wait_group == group) f->wait_group = -1;
    return;
  }
  Fiber& me = *block.fibers[block.current];
  me.wait_group = group;
  fiber_suspend(me);
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 blk, Args&&... args) {
  if (blk.x % 32 != 0 || blk.y != 1 || blk.z != 1) throw std::runtime_error("emu: block shape");
  if (grid.x == 0 || grid.y == 0 || grid.z != 1) throw std::runtime_error("emu: grid shape");
  ++launches;
  grid_dim = grid;
  block_dim = blk;
  const unsigned n = blk.x;
  while (block.fibers.size() < n) block.fibers.push_back(std::make_unique<Fiber>());
  block.arrived.assign(1 + n / 32, 0);
  shfl_buf.assign(n, 0.0);
  std::function<void()> body = [&] { kernel(args...); };
  block.body = &body;
  direct_mode = saw_barrier = false;
  bool first = true;
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      block_idx = dim3(bx, by);
      if (!first && !saw_barrier) {
        direct_mode = true;
        for (unsigned t = 0; t < n; ++t) {
          thread_idx = dim3(t);
          kernel(args...);
        }
        continue;
      }
      first = false;
      for (unsigned t = 0; t < n; ++t) {
        Fiber& f = *block.fibers[t];
        f.done = false;
        f.wait_group = -1;
        fiber_init(f);
      }
      // Round robin over the runnable threads until all are done; a pass in which nothing
      // could run while some thread waits is a barrier that can never be passed.
      unsigned remaining = n;
      while (remaining > 0) {
        bool progressed = false;
        for (unsigned t = 0; t < n; ++t) {
          Fiber& f = *block.fibers[t];
          if (f.done || f.wait_group >= 0) continue;
          block.current = t;
          thread_idx = dim3(t);
          fiber_resume(f);
          progressed = true;
          if (f.done) --remaining;
        }
        if (!progressed && remaining > 0)
          throw std::runtime_error("emu: deadlock in block (" + std::to_string(bx) + ", " +
                                   std::to_string(by) + "): " + std::to_string(remaining) +
                                   " threads wait at a barrier that the others never reach");
      }
    }
  }
  block.body = nullptr;
  direct_mode = false;
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

inline void __syncthreads() { emu::arrive(0, static_cast<int>(emu::block_dim.x)); }

template <typename T>
T __shfl_down_sync(unsigned /*mask*/, T v, int offset) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  emu::shfl_buf[threadIdx.x] = static_cast<double>(v);
  emu::arrive(1 + warp, 32);
  const T r = lane + offset < 32 ? static_cast<T>(emu::shfl_buf[threadIdx.x + offset]) : v;
  emu::arrive(1 + warp, 32);
  return r;
}

using std::max;
using std::min;

// The place of planted bug n in the build's copy of the kernels: `bad` while bug n is switched
// on, `good` (the kernel's own expression) otherwise.
#define ELSA_PLANT(n, good, bad) (emu::planted_bug == (n) ? (bad) : (good))

#define ELSA_DEVICE_GUARD(t) (void)0
#define ELSA_CURRENT_STREAM() 0
#define ELSA_LAUNCH(kernel, grid, block, stream, ...) \
  emu::launch(kernel, emu::to_dim3(grid), emu::to_dim3(block), __VA_ARGS__)

namespace emu {
inline dim3 to_dim3(dim3 d) { return d; }
inline dim3 to_dim3(int64_t n) { return dim3(static_cast<unsigned>(n)); }
}  // namespace emu
