"""The CuPy GPU backend, and its CUDA C kernels, in reading order:

    backend.py      CupyBackend: the contract's ops on the device, and probe()
    launches.py     the host side of each kernel: dtypes, contiguity, outputs, launch shapes
    kernels.py      the .cu files, their C signatures, and the GPU launcher (cupy.RawModule)
    *.cu, *.cuh     the kernels, one family per file, each opening with its equation
    toolchain.py    the kernels without a GPU: nvcc / NVRTC compile checks, and CpuLauncher,
                    which runs the same CUDA C on CPU threads through cpu_shim.h (with
                    AddressSanitizer, UBSan or ThreadSanitizer)

Importing this package imports neither CuPy nor anything that needs a GPU.
"""
