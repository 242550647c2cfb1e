// cpu_shim.h — run this folder's CUDA C on the CPU, one std::thread per CUDA thread.
//
// Include it, then a .cu file, and compile with g++ (-std=c++20): the kernel's own source runs,
// so AddressSanitizer, UBSan and ThreadSanitizer see its every access. What it maps:
//
//   threadIdx, blockIdx, blockDim, gridDim   per-thread / per-launch values
//   __syncthreads()                          a barrier of the block's threads
//   __shfl_xor_sync, __shfl_down_sync,       a barrier of the warp's 32 threads around an
//   __shfl_sync                              exchange slot per lane (full masks only)
//   __shared__                               `static`: one copy, reused block after block
//   atomicAdd                                std::atomic_ref
//   __fmul_rn, __fadd_rn, __fsub_rn,         plain float operations (compile with
//   __int_as_float, __float_as_int, …        -ffp-contract=off, so nothing is fused)
//
// A launch starts blockDim threads and walks the grid block by block: every thread runs the
// kernel for block 0, meets the others at the block's end, then runs block 1, and so on. That
// is one legal CUDA schedule, so it shows data races between the threads of a block (which is
// where __shared__ memory and barriers matter) but not between blocks. With CPU_SHIM_FIBERS
// defined (the unsanitized in-process build) the CUDA threads are fibers of one OS thread
// instead, switched at barriers: the same schedule, many times faster, and no sanitizer.
//
// Stricter than a GPU, on purpose: every barrier checks that all the threads it waits for
// arrive at the same kind of barrier. A __syncthreads that some warps skip (they returned early,
// or took another branch) stops the launch at once with a message naming the block. Where the
// threads cannot all meet (lanes of one warp split between a shuffle, __syncthreads and the
// end), fibers see it at once and OS threads after $CPU_SHIM_TIMEOUT_S seconds (default 30)
// without progress. Fibers report a failure as the launch's error; OS threads abort the program.
//
// Entry points (C linkage, for ctypes and for the test driver's main):
//   cpu_shim_launch(name, grid[3], block[3], args, nargs, kinds, sizes, error, error_len)
//     args[i] points to the i-th argument (for a pointer parameter: to the pointer), as
//     cuLaunchKernel takes them; kinds[i] is 1 for a pointer, 0 for a value; sizes[i] is the
//     value's size or the pointee's size. Each is checked against the kernel's C signature.
//   main (with CPU_SHIM_MAIN defined): reads a job file naming the kernel, the launch shape and
//     the arguments (buffers in files), runs it, writes the buffers back.
#ifndef MINIGEMMA_CPU_SHIM_H
#define MINIGEMMA_CPU_SHIM_H

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

namespace cpu_shim {

constexpr int kWarpSize = 32;
constexpr int kDefaultTimeoutSeconds = 30;  // $CPU_SHIM_TIMEOUT_S overrides it

inline dim3 grid_dim, block_dim;  // written before the threads start, read-only while they run
inline std::string kernel_name;
inline thread_local dim3 thread_idx, block_idx;
inline thread_local int rank = 0;  // this thread's index within its block
inline thread_local bool in_kernel = false;  // on a CUDA thread (an OS thread or a fiber)

// "kernel k, block (x, y, z), thread r", for messages.
inline std::string where()
{
    return kernel_name + ", block (" + std::to_string(block_idx.x) + ", " +
           std::to_string(block_idx.y) + ", " + std::to_string(block_idx.z) + "), thread " +
           std::to_string(rank);
}

// A failure outside the CUDA threads (a launch shape CUDA refuses), or one a fiber reported.
struct ShimError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

#ifdef CPU_SHIM_FIBERS
// Fiber mode (no sanitizer: the in-process library): the threads of a block are fibers on one
// OS thread, switched at barriers, so a barrier costs a few stack switches instead of waking
// hundreds of OS threads. A fiber that fails hands its message to the scheduler, which raises
// it as a ShimError: the host process is never aborted.
//
// switch_stack(from, to) saves the callee-saved registers and the floating-point control words
// on the current stack, stores the stack pointer in *from, and continues on the stack `to`
// (where the same was saved, or a new fiber's first frame). x86-64 System V only.
#if !defined(__x86_64__)
#error "cpu_shim.h's fiber mode switches stacks with x86-64 code: build without CPU_SHIM_FIBERS"
#endif
extern "C" void cpu_shim_switch_stack(void** from, void* to);
asm(R"(
    .text
    .globl cpu_shim_switch_stack
    .type cpu_shim_switch_stack, @function
cpu_shim_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cpu_shim_switch_stack, .-cpu_shim_switch_stack
    .section .note.GNU-stack,"",@progbits
    .text
)");

struct Fiber {
    void* sp = nullptr;  // its saved stack pointer while it is not running
    std::unique_ptr<char[]> stack;
    int rank = 0;
    dim3 index;
    bool done = false;
};
inline thread_local void* scheduler_sp = nullptr;
inline thread_local Fiber* running = nullptr;
inline thread_local std::string fiber_failure;
inline thread_local unsigned long long events = 0;  // arrivals and exits: a deadlock makes none
constexpr size_t kFiberStackBytes = 64 * 1024;

inline void yield_fiber() { cpu_shim_switch_stack(&running->sp, scheduler_sp); }
#endif

[[noreturn]] inline void die(const std::string& message)  // print and stop the program
{
    std::fprintf(stderr, "cpu_shim: %s\n", message.c_str());
    std::fflush(stderr);
    std::abort();
}

[[noreturn]] inline void fail(const std::string& message)
{
#ifdef CPU_SHIM_FIBERS
    if (in_kernel) {
        fiber_failure = message;
        yield_fiber();  // the scheduler never resumes a failed fiber
    }
#endif
    if (!in_kernel)
        throw ShimError(message);
    die(message);  // an OS thread of the program: the others cannot be stopped cleanly
}

inline std::atomic<unsigned long long> progress{0};  // barriers passed, for the watchdog

// All `count` threads arrive, each saying at which kind of barrier; the last one checks that
// the kinds agree and releases the others (who wait on the generation number: a futex, or in
// fiber mode by yielding to the next fiber).
class Barrier {
public:
    enum Kind { kSync, kShuffle, kExit };

    void reset(int count)
    {
        count_ = count;
        arrived_ = 0;
        kinds_ = 0;
    }

    void arrive(Kind kind)
    {
        const unsigned long generation = generation_.load(std::memory_order_acquire);
        const unsigned kinds = kinds_.fetch_or(1u << kind, std::memory_order_acq_rel) | (1u << kind);
#ifdef CPU_SHIM_FIBERS
        ++events;
#endif
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == count_) {
            if (kinds & (kinds - 1))  // more than one kind of barrier in this round
                fail("divergent barrier in " + where() + ": some threads are at " +
                     names(kinds) + " (every thread of the block, or lane of the warp, must "
                     "reach the same one)");
            arrived_.store(0, std::memory_order_relaxed);
            kinds_.store(0, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
            generation_.notify_all();
            progress.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        while (generation_.load(std::memory_order_acquire) == generation) {
#ifdef CPU_SHIM_FIBERS
            yield_fiber();
#else
            generation_.wait(generation, std::memory_order_acquire);
#endif
        }
    }

private:
    static std::string names(unsigned kinds)
    {
        std::string text;
        const char* name[] = {"__syncthreads", "a warp shuffle", "the end of the kernel"};
        for (int k = 0; k < 3; ++k)
            if (kinds & (1u << k))
                text += std::string(text.empty() ? "" : ", others at ") + name[k];
        return text;
    }

    int count_ = 0;
    std::atomic<int> arrived_{0};
    std::atomic<unsigned> kinds_{0};
    std::atomic<unsigned long> generation_{0};
};

struct Warp {
    Barrier barrier;
    int lanes = kWarpSize;
    unsigned long long slot[kWarpSize] = {};  // what each lane offers to a shuffle
};

struct Launch {  // what the threads of one launch share
    dim3 grid, block;
    Barrier block_barrier;
    std::vector<std::unique_ptr<Warp>> warps;
    const std::function<void()>* body = nullptr;
};

inline thread_local Launch* current = nullptr;

inline void syncthreads()
{
    current->block_barrier.arrive(Barrier::kSync);
}

template <typename T>
T shuffle(unsigned mask, T value, int source_lane)
{
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffle of a value over 8 bytes");
    const int threads = static_cast<int>(block_dim.x * block_dim.y * block_dim.z);
    if (mask != 0xffffffffu)
        fail("a warp shuffle with mask " + std::to_string(mask) +
             ": the kernels of this folder shuffle full warps only");
    if (threads % kWarpSize != 0)
        fail("a warp shuffle in a block of " + std::to_string(threads) +
             " threads: blocks that shuffle must hold whole warps");
    Warp& warp = *current->warps[rank / kWarpSize];
    const int lane = rank % kWarpSize;
    std::memcpy(&warp.slot[lane], &value, sizeof(T));
    warp.barrier.arrive(Barrier::kShuffle);
    T result;
    std::memcpy(&result, &warp.slot[source_lane], sizeof(T));
    warp.barrier.arrive(Barrier::kShuffle);  // the slots are free again
    return result;
}

inline int lane_id() { return rank % kWarpSize; }

// One CUDA thread's work on the current block: the kernel, then the end-of-block barriers.
inline void run_thread_for_block(Launch& state)
{
    (*state.body)();
    state.warps[rank / kWarpSize]->barrier.arrive(Barrier::kExit);
    state.block_barrier.arrive(Barrier::kExit);
}

#ifdef CPU_SHIM_FIBERS
[[noreturn]] inline void fiber_main()
{
    run_thread_for_block(*current);
    running->done = true;
    ++events;
    yield_fiber();  // a finished fiber is never resumed
    std::abort();
}

// A new fiber's stack, as switch_stack leaves one: its return address is fiber_main (entered
// with the stack aligned as after a call), under it zeros for the six saved registers and the
// scheduler's floating-point control words.
inline void make_fiber(Fiber& f)
{
    auto top = reinterpret_cast<std::uintptr_t>(f.stack.get() + kFiberStackBytes) & ~std::uintptr_t{15};
    auto* sp = reinterpret_cast<std::uint64_t*>(top);
    *--sp = 0;  // fiber_main's own (never used) return address
    *--sp = reinterpret_cast<std::uint64_t>(&fiber_main);
    for (int i = 0; i < 6; ++i)
        *--sp = 0;  // rbp, rbx, r12 … r15
    *--sp = 0;
    unsigned int mxcsr;
    unsigned short fpu_cw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpu_cw));
    std::memcpy(reinterpret_cast<char*>(sp), &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(sp) + 4, &fpu_cw, 2);
    f.sp = sp;
}

inline void resume_fiber(Fiber& f) { cpu_shim_switch_stack(&scheduler_sp, f.sp); }

inline void run_grid(Launch& state, long long threads)
{
    static thread_local std::vector<Fiber> pool;  // stacks kept from launch to launch
    while (static_cast<long long>(pool.size()) < threads) {
        pool.emplace_back();
        pool.back().stack.reset(new char[kFiberStackBytes]);  // not zeroed: no page is touched
    }
    Fiber* fibers = pool.data();
    const dim3 block = state.block, grid = state.grid;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                block_idx = {x, y, z};
                for (int r = 0; r < threads; ++r) {
                    Fiber& f = fibers[r];
                    f.rank = r;
                    f.index = {r % block.x, (r / block.x) % block.y, r / (block.x * block.y)};
                    f.done = false;
                    make_fiber(f);
                }
                long long remaining = threads;
                while (remaining > 0) {  // round robin until every fiber has finished the block
                    const unsigned long long before = events;
                    for (long long r = 0; r < threads; ++r) {
                        Fiber& f = fibers[r];
                        if (f.done)
                            continue;
                        running = &f;
                        rank = f.rank;
                        thread_idx = f.index;
                        in_kernel = true;
                        resume_fiber(f);
                        in_kernel = false;
                        if (!fiber_failure.empty()) {
                            const std::string message = fiber_failure;
                            fiber_failure.clear();
                            throw ShimError(message);
                        }
                        remaining -= f.done;
                    }
                    if (remaining > 0 && events == before)
                        throw ShimError(where() + ": a deadlock: every unfinished thread waits "
                                        "at a barrier that the others never reach");
                }
            }
}
#else
inline void run_grid(Launch& state, long long threads)
{
    std::atomic<long long> finished{0};
    std::vector<std::thread> pool;
    for (int r = 0; r < threads; ++r) {
        pool.emplace_back([&state, &finished, r] {
            const dim3 block = state.block, grid = state.grid;
            current = &state;
            rank = r;
            in_kernel = true;
            thread_idx = {r % block.x, (r / block.x) % block.y, r / (block.x * block.y)};
            for (unsigned z = 0; z < grid.z; ++z)
                for (unsigned y = 0; y < grid.y; ++y)
                    for (unsigned x = 0; x < grid.x; ++x) {
                        block_idx = {x, y, z};
                        run_thread_for_block(state);
                    }
            finished.fetch_add(1);
            progress.fetch_add(1);
        });
    }
    // Watchdog: a thread waiting at a barrier that the others never reach makes no progress.
    const char* timeout_text = std::getenv("CPU_SHIM_TIMEOUT_S");
    const int timeout = timeout_text ? std::atoi(timeout_text) : kDefaultTimeoutSeconds;
    auto seen = progress.load();
    auto last_change = std::chrono::steady_clock::now();
    while (finished.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (progress.load() != seen) {
            seen = progress.load();
            last_change = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - last_change >
                   std::chrono::seconds(timeout)) {
            die(kernel_name + ": no thread passed a barrier for " + std::to_string(timeout) +
                 " s: a deadlock (threads waiting at a barrier that others never reach) or an "
                 "endless loop");
        }
    }
    for (auto& thread : pool)
        thread.join();
}
#endif

// Run `body` for every block of the grid on block.x · block.y · block.z CUDA threads.
inline void launch(const std::string& kernel, dim3 grid, dim3 block,
                   const std::function<void()>& body)
{
    const long long threads = 1LL * block.x * block.y * block.z;
    if (threads < 1 || threads > 1024 || block.z > 64)
        fail(kernel + ": a block of " + std::to_string(threads) + " threads (CUDA allows 1…1024)");
    if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535)
        fail(kernel + ": grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " +
             std::to_string(grid.z) + ") is outside CUDA's limits");
    Launch state;
    state.grid = grid;
    state.block = block;
    state.body = &body;
    state.block_barrier.reset(static_cast<int>(threads));
    for (long long first = 0; first < threads; first += kWarpSize) {
        state.warps.push_back(std::make_unique<Warp>());
        state.warps.back()->lanes = static_cast<int>(std::min<long long>(kWarpSize, threads - first));
        state.warps.back()->barrier.reset(state.warps.back()->lanes);
    }
    grid_dim = grid;
    block_dim = block;
    kernel_name = kernel;
    current = &state;
    run_grid(state, threads);
}

// --- the kernel table: a C signature per kernel, and a call from an argument array -------------

struct Parameter {
    bool pointer;
    long long size;  // of the value, or of the pointee
};

struct Kernel {
    std::vector<Parameter> parameters;
    std::function<void(void**)> call;  // runs the kernel body once, in the calling thread
};

inline std::map<std::string, Kernel>& kernels()
{
    static std::map<std::string, Kernel> table;
    return table;
}

template <typename A>
Parameter describe()
{
    if constexpr (std::is_pointer_v<A>)
        return {true, static_cast<long long>(sizeof(std::remove_pointer_t<A>))};
    else
        return {false, static_cast<long long>(sizeof(A))};
}

template <typename... A, std::size_t... I>
void call_with(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

template <typename... A>
bool add(const char* name, void (*kernel)(A...))
{
    Kernel entry;
    entry.parameters = {describe<A>()...};
    entry.call = [kernel](void** args) { call_with(kernel, args, std::index_sequence_for<A...>{}); };
    kernels()[name] = entry;
    return true;
}

}  // namespace cpu_shim

#define CPU_SHIM_KERNEL(name) static const bool cpu_shim_registered_##name = cpu_shim::add(#name, name);

// --- the CUDA names ---------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define threadIdx (cpu_shim::thread_idx)
#define blockIdx (cpu_shim::block_idx)
#define blockDim (cpu_shim::block_dim)
#define gridDim (cpu_shim::grid_dim)

inline void __syncthreads() { cpu_shim::syncthreads(); }

template <typename T>
T __shfl_sync(unsigned mask, T value, int source, int width = cpu_shim::kWarpSize)
{
    const int lane = cpu_shim::lane_id();
    return cpu_shim::shuffle(mask, value, lane / width * width + source % width);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = cpu_shim::kWarpSize)
{
    const int lane = cpu_shim::lane_id(), source = lane ^ lane_mask;
    return cpu_shim::shuffle(mask, value, source / width == lane / width ? source : lane);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = cpu_shim::kWarpSize)
{
    const int lane = cpu_shim::lane_id();
    const int source = lane % width + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
    return cpu_shim::shuffle(mask, value, source);
}

template <typename T>
T atomicAdd(T* address, T value)
{
    return std::atomic_ref<T>(*address).fetch_add(value);
}

inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline float __int_as_float(unsigned bits) { float f; std::memcpy(&f, &bits, 4); return f; }
inline int __float_as_int(float f) { int bits; std::memcpy(&bits, &f, 4); return bits; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

// --- entry points -----------------------------------------------------------------------------

extern "C" int cpu_shim_launch(const char* name, const unsigned* grid, const unsigned* block,
                               void** args, int nargs, const int* kinds, const long long* sizes,
                               char* error, int error_len)
{
    auto report = [&](const std::string& message) {
        std::snprintf(error, static_cast<size_t>(error_len), "%s", message.c_str());
        return 1;
    };
    auto found = cpu_shim::kernels().find(name);
    if (found == cpu_shim::kernels().end())
        return report(std::string("no kernel named ") + name);
    const cpu_shim::Kernel& kernel = found->second;
    if (nargs != static_cast<int>(kernel.parameters.size()))
        return report(std::string(name) + " takes " + std::to_string(kernel.parameters.size()) +
                      " arguments, got " + std::to_string(nargs));
    for (int i = 0; i < nargs; ++i) {
        const cpu_shim::Parameter& p = kernel.parameters[i];
        if (p.pointer != (kinds[i] == 1) || p.size != sizes[i])
            return report(std::string(name) + " argument " + std::to_string(i) + ": the kernel takes " +
                          (p.pointer ? "a pointer to " : "a value of ") + std::to_string(p.size) +
                          " bytes, got " + (kinds[i] == 1 ? "a pointer to " : "a value of ") +
                          std::to_string(sizes[i]) + " bytes");
    }
    try {
        cpu_shim::launch(name, {grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]},
                         [&] { kernel.call(args); });
    } catch (const cpu_shim::ShimError& e) {
        return report(e.what());
    }
    return 0;
}

#ifdef CPU_SHIM_MAIN
// Job file, one item per line:
//   kernel NAME
//   grid X Y Z
//   block X Y Z
//   pointer ITEMSIZE PATH     a buffer: the file's bytes, in a heap block of exactly that size
//   value SIZE HEXBYTES       a value, its bytes in hexadecimal (little-endian, as in memory)
// Every buffer is written back to its file after the launch.
int main(int argc, char** argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s JOB\n", argv[0]);
        return 2;
    }
    std::FILE* job = std::fopen(argv[1], "r");
    if (!job) {
        std::fprintf(stderr, "cannot open job file %s\n", argv[1]);
        return 2;
    }
    std::string name;
    unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
    std::vector<int> kinds;
    std::vector<long long> sizes;
    std::vector<std::string> paths;
    std::vector<std::vector<unsigned char>> values;
    std::vector<unsigned char*> buffers;
    std::vector<long long> buffer_bytes;
    char word[64], text[4096];
    while (std::fscanf(job, "%63s", word) == 1) {
        const std::string item = word;
        if (item == "kernel") {
            if (std::fscanf(job, "%4095s", text) != 1) return 2;
            name = text;
        } else if (item == "grid" || item == "block") {
            unsigned* shape = item == "grid" ? grid : block;
            if (std::fscanf(job, "%u %u %u", &shape[0], &shape[1], &shape[2]) != 3) return 2;
        } else if (item == "pointer") {
            long long itemsize;
            if (std::fscanf(job, "%lld %4095s", &itemsize, text) != 2) return 2;
            std::FILE* f = std::fopen(text, "rb");
            if (!f) { std::fprintf(stderr, "cannot open %s\n", text); return 2; }
            std::fseek(f, 0, SEEK_END);
            const long long bytes = std::ftell(f);
            std::fseek(f, 0, SEEK_SET);
            auto* data = static_cast<unsigned char*>(std::malloc(bytes > 0 ? bytes : 1));
            if (bytes > 0 && std::fread(data, 1, bytes, f) != static_cast<size_t>(bytes)) return 2;
            std::fclose(f);
            kinds.push_back(1);
            sizes.push_back(itemsize);
            paths.push_back(text);
            buffers.push_back(data);
            buffer_bytes.push_back(bytes);
            values.emplace_back();
        } else if (item == "value") {
            long long size;
            if (std::fscanf(job, "%lld %4095s", &size, text) != 2) return 2;
            std::vector<unsigned char> bytes(static_cast<size_t>(size));
            for (long long i = 0; i < size; ++i)
                bytes[i] = static_cast<unsigned char>(std::strtoul(std::string(text + 2 * i, 2).c_str(), nullptr, 16));
            kinds.push_back(0);
            sizes.push_back(size);
            paths.emplace_back();
            buffers.push_back(nullptr);
            buffer_bytes.push_back(0);
            values.push_back(bytes);
        } else {
            std::fprintf(stderr, "unknown job item %s\n", word);
            return 2;
        }
    }
    std::fclose(job);
    std::vector<void*> args(kinds.size());
    for (size_t i = 0; i < kinds.size(); ++i)
        args[i] = kinds[i] == 1 ? static_cast<void*>(&buffers[i]) : static_cast<void*>(values[i].data());
    char error[1024] = "";
    if (cpu_shim_launch(name.c_str(), grid, block, args.data(), static_cast<int>(args.size()),
                        kinds.data(), sizes.data(), error, sizeof error) != 0) {
        std::fprintf(stderr, "cpu_shim: %s\n", error);
        return 3;
    }
    for (size_t i = 0; i < kinds.size(); ++i) {
        if (kinds[i] != 1)
            continue;
        std::FILE* f = std::fopen(paths[i].c_str(), "wb");
        if (!f || std::fwrite(buffers[i], 1, buffer_bytes[i], f) != static_cast<size_t>(buffer_bytes[i])) return 2;
        std::fclose(f);
        std::free(buffers[i]);
    }
    return 0;
}
#endif  // CPU_SHIM_MAIN

#endif  // MINIGEMMA_CPU_SHIM_H
