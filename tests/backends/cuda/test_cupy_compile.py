"""Every .cu file of the CuPy backend compiles for the GPUs it targets, warnings as errors.

nvcc compiles each file for sm_80 (A100) and sm_90 (H100 / H200) once per test session, two
files at a time. A syntax error, and a mere warning, must fail with the file and line in the
message. Where CuPy's NVRTC bindings work (the GPU machine), the text the backend hands to
NVRTC (`kernels.source`) is compiled that way too.
"""
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from minigemma.backends.cupy import kernels
from minigemma.backends.cupy.toolchain import (
    ARCHS,
    CompileError,
    nvcc_compile,
    nvcc_path,
    nvrtc_available,
    nvrtc_compile,
)

FILES = kernels.kernel_files()
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not installed here")


@pytest.fixture(scope="session")
def nvcc_results(tmp_path_factory):
    """{(file, arch): cubin path or CompileError}, every file compiled once per arch."""
    out = tmp_path_factory.mktemp("cubins")

    def compile_one(job):
        file, arch = job
        try:
            return job, nvcc_compile(kernels.KERNEL_DIR / file, arch, out)
        except CompileError as e:
            return job, e
    jobs = [(f, a) for f in FILES for a in ARCHS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(compile_one, jobs))


def test_the_kernel_files_are_there():
    assert FILES == ["attention_decode.cu", "conv1d.cu", "dequantize_blocks.cu",
                     "distill_loss.cu", "elementwise.cu", "matvec_blocks.cu", "rglru_scan.cu",
                     "rms_norm.cu", "rope.cu"]


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("file", FILES)
def test_compiles_without_warnings(nvcc_results, file, arch):
    result = nvcc_results[(file, arch)]
    if isinstance(result, CompileError):
        pytest.fail(str(result))
    assert result.stat().st_size > 0
    names = set(kernels.signatures(file))
    assert names and all(name.encode() in result.read_bytes() for name in names)


@needs_nvcc
def test_a_syntax_error_is_reported_with_file_and_line(tmp_path):
    shutil.copy(kernels.KERNEL_DIR / "common.cuh", tmp_path)
    (tmp_path / "broken.cu").write_text(
        '#include "common.cuh"\n'
        'extern "C" __global__ void broken(float* out)\n'
        '{\n'
        '    out[threadIdx.x] = 1.0f\n'  # line 4: the semicolon is missing
        '}\n')
    with pytest.raises(CompileError, match=r"broken\.cu\(\d+\): error"):
        nvcc_compile(tmp_path / "broken.cu", "90", tmp_path)


@needs_nvcc
def test_a_warning_is_an_error(tmp_path):
    (tmp_path / "warns.cu").write_text(
        'extern "C" __global__ void warns(float* out)\n'
        '{\n'
        '    int unused = 3;\n'  # line 3: "declared but never referenced"
        '    out[threadIdx.x] = 1.0f;\n'
        '}\n')
    with pytest.raises(CompileError, match=r"warns\.cu\(3\): error"):
        nvcc_compile(tmp_path / "warns.cu", "80", tmp_path)


@needs_nvcc
def test_errors_in_the_expanded_source_point_at_the_header(tmp_path):
    """kernels.source inlines the headers with #line marks: an error in a header is reported
    at the header's own file and line (as NVRTC will report it on the GPU machine)."""
    (tmp_path / "bad.cuh").write_text("// a header\n\n__device__ float oops() { return 1.0f }\n")
    (tmp_path / "uses.cu").write_text('#include "bad.cuh"\n'
                                      'extern "C" __global__ void uses(float* out) '
                                      '{ out[0] = oops(); }\n')
    expanded = tmp_path / "expanded.cu"
    expanded.write_text(kernels.source("uses.cu", tmp_path))
    with pytest.raises(CompileError, match=r"bad\.cuh\(3\): error"):
        nvcc_compile(expanded, "90", tmp_path)


needs_nvrtc = pytest.mark.skipif(nvrtc_available() is not None, reason=str(nvrtc_available()))


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_the_source_the_backend_loads(arch):
    for file in FILES:
        assert len(nvrtc_compile(file, arch)) > 0, file


@needs_nvrtc
def test_nvrtc_reports_a_syntax_error_with_file_and_line(tmp_path):
    (tmp_path / "broken.cu").write_text('extern "C" __global__ void broken(float* out)\n'
                                        '{\n    out[0] = 1.0f\n}\n')
    with pytest.raises(CompileError, match=r"broken\.cu\(4\): error: expected a \";\""):
        nvrtc_compile("broken.cu", "90", tmp_path)
