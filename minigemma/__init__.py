"""minigemma: the Gemma model families in readable NumPy.

Gemma 1, Gemma 2, Gemma 3 (text) and RecurrentGemma, written so that each component reads like
its paper, with the kernel-worthy operations behind one backend interface (NumPy reference,
Numba CPU, CuPy GPU).

Notation used in every shape comment of the package:

    B batch        T query length     S key length (cache slots)
    D model width  N query heads      K key/value heads   G = N / K query heads per kv head
    H head dim     F MLP width (per branch of the gated MLP)
    L recurrent width                 V vocabulary rows

Public entry points::

    import minigemma
    model = minigemma.load("path/to/converted")   # backend="auto": CuPy, else Numba, else NumPy
    model.logits(ids)                     # np.ndarray [T, V] float32
    model.hidden_states(ids)              # [layers + 1, T, D]; model.unembed(h) -> logits
    minigemma.random_model(minigemma.preset("gemma3-270m"), seed=0)
    minigemma.decode_state_bytes(config, context)
    minigemma.available_backends()        # {"numpy": None, "numba": "reason", ...}
    minigemma.loss_and_grad(model, ids)   # (next-token loss, {parameter name: gradient})

Beyond these, the public API is every name without a leading underscore in the subpackages'
modules: the ops (`minigemma.ops.attention.attention`, …), the configs and networks
(`minigemma.models`), the formats (`minigemma.formats.native.read_checkpoint`,
`minigemma.formats.gguf.blocks`, …), text, training and the backends. The reading order is
the tree's: ops, backends, models, formats, text, training, tools.
"""
# The public names, re-exported here.
from minigemma.backends import available_backends, get_backend  # noqa: F401
from minigemma.models.config import PRESETS, GemmaConfig, GriffinConfig, preset  # noqa: F401
from minigemma.models.decode_state import decode_state_bytes  # noqa: F401

__version__ = "0.1.0"


def load(path=None, backend="auto", max_context=None):
    """Load a model in minigemma's checkpoint format onto `backend`.

    `path` is a folder written by `minigemma convert` (or `minigemma.convert`), or a GGUF file
    or an HF folder, converted on first use into the cache (`minigemma.model.checkpoint_folder`).
    With no path the embedded default model is used. backend="auto" takes the fastest backend that works here
    (CuPy on a working GPU, else Numba, else NumPy); any backend can be named, e.g. "numpy",
    the readable reference.
    """
    from minigemma.model import load as _load
    return _load(path, backend=backend, max_context=max_context)


def random_model(config, seed=0, backend="numpy", tokenizer=None):
    """A Model of `config` (a preset or any config) with random weights; see minigemma.model."""
    from minigemma.model import random_model as _random_model
    return _random_model(config, seed=seed, backend=backend, tokenizer=tokenizer)


def convert(src, dst, dtype=None, progress=True, overwrite=False, **source_args):
    """Convert a checkpoint into minigemma's format at `dst`; returns dst.

    src: an HF safetensors folder, a GGUF file, or an official recurrentgemma state dict (a .pt
    file or the dict itself; source_args attention_window, final_softcap, max_position and
    tokenizer_path give what it does not record). dtype: "f32" (None), "bf16", "q8_0" or
    "q4_0" for the matrices of an HF or official source; a GGUF file keeps its own storage.
    See `minigemma.formats.convert`.
    """
    from minigemma.formats.convert import convert as _convert
    return _convert(src, dst, dtype=dtype, progress=progress, overwrite=overwrite, **source_args)


def loss_and_grad(model, ids, teacher=None, temperature=1.0):
    """(mean next-token cross-entropy over ids[:, 1:], {parameter name: gradient}) of a Model;
    with `teacher` (dense logits or a SparseTeacher) the distillation loss at `temperature`.
    See `minigemma.training.objective.loss_and_grad`."""
    from minigemma.training.objective import loss_and_grad as _loss_and_grad
    return _loss_and_grad(model, ids, teacher=teacher, temperature=temperature)
