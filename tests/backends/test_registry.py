"""The backend registry and what `import minigemma` pulls in."""
import subprocess
import sys

import pytest

import minigemma
from minigemma.models.config import PRESETS, preset
from minigemma.models.decode_state import decode_state_bytes


def test_numpy_is_available_and_others_say_why_not():
    status = minigemma.available_backends()
    assert status["numpy"] is None
    for name in ("numba", "cupy"):
        assert name in status
        if status[name] is not None:
            assert isinstance(status[name], str) and len(status[name]) > 10


def test_unknown_and_unavailable_backends_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        minigemma.get_backend("tpu")
    for name, reason in minigemma.available_backends().items():
        if reason is not None:
            with pytest.raises(ValueError, match="not available"):
                minigemma.get_backend(name)


def test_auto_is_the_fastest_backend_that_works_here():
    """CuPy on a working GPU, else Numba, else NumPy: load() and the CLI default to it."""
    import inspect

    from minigemma.backends import AUTO_ORDER, auto_backend_name
    from minigemma.tools.cli import build_parser
    status = minigemma.available_backends()
    assert AUTO_ORDER == ("cupy", "numba", "numpy")
    expected = next(name for name in AUTO_ORDER if status[name] is None)
    assert auto_backend_name() == expected
    assert minigemma.get_backend("auto") is minigemma.get_backend(expected)
    assert inspect.signature(minigemma.load).parameters["backend"].default == "auto"
    args = build_parser().parse_args(["generate", "--prompt", "hi"])
    assert args.backend == "auto"


def test_import_minigemma_imports_neither_numba_nor_cupy():
    code = ("import sys, minigemma; minigemma.available_backends.__name__; "
            "print(sorted(m for m in ('numba', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_numpy_backend_refuses_foreign_arrays():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="to_numpy"):
        minigemma.get_backend("numpy").asarray(torch.zeros(3))


@pytest.mark.parametrize("name, params_billion", [
    ("gemma-2b", 2.506), ("gemma-7b", 8.538), ("gemma2-2b", 2.614), ("gemma2-9b", 9.242),
    ("gemma2-27b", 27.227), ("gemma3-270m", 0.268), ("gemma3-1b", 1.000)])
def test_preset_parameter_counts_match_the_spec(name, params_billion):
    import math

    from minigemma.models.gemma import parameter_shapes
    total = sum(math.prod(s) for s in parameter_shapes(preset(name)).values())
    assert abs(total / 1e9 - params_billion) < 0.0015 * params_billion + 0.001


def test_every_preset_builds_and_layer_patterns_follow_the_spec():
    assert len(PRESETS) == 9
    g2, g3 = preset("gemma2-9b"), preset("gemma3-1b")
    assert g2.layer_types[:2] == ("local", "global")
    assert [i for i, k in enumerate(g3.layer_types) if k == "global"] == [5, 11, 17, 23]
    assert preset("gemma2-27b").query_scale == 144 ** -0.5
    assert (decode_state_bytes(preset("gemma3-270m"), 10_000)
            < decode_state_bytes(preset("gemma-2b"), 10_000))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gemma5")
