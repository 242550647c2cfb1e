"""Import of official `recurrentgemma` PyTorch checkpoints (google-deepmind/recurrentgemma,
`recurrentgemma.torch.Griffin`): a flat state dict {name: tensor}, from a `.pt` file (read with
`torch.load(..., weights_only=True)`, never unpickling code) or already in memory. The only
place the official tensor names appear (docs/formats.md#official-recurrentgemma; recurrentgemma's `torch/modules.py`, `torch/layers.py`).

A state dict records shapes but not every hyperparameter. Inferred from shapes: vocabulary,
width, layer kinds, heads (RG-LRU gate blocks or key width), RG-LRU width, MLP width, conv
width. Not recorded, so given as arguments (CONFIG_ARGS), by default GriffinConfig's, the
released RecurrentGemma values: the attention window (2048), the final soft-cap (30) and the
context (8192). The official local attention admits W + 1 keys per query, so the config says
window_includes_extra_key=True.

Strict: every source tensor is consumed, every shape checked. Layout changes, each in one place:
    mlp_block.ffw_up.w [2, D, F] -> gate_proj = w[0]ᵀ, up_proj = w[1]ᵀ   [F, D]
    mlp_block.ffw_up.b [2, 1, 1, F] -> gate_proj_bias = b[0, 0, 0], up_proj_bias = b[1, 0, 0]
    norm scale w -> 1 + w, in float32
"""
import os

import numpy as np

from minigemma.formats.conversion import ConvertedModel, check_tensor_names, read_tokenizer_file
from minigemma.formats.hf_griffin import storage_of
from minigemma.models.config import GriffinConfig, field_defaults
from minigemma.models.griffin import parameter_shapes

# minigemma name inside `layers.{i}.` -> (official name inside `blocks.{i}.`, layout)
LAYER_SOURCES = {
    "temporal_norm": ("temporal_pre_norm.scale", "norm"),
    "y_proj": ("recurrent_block.linear_y.weight", "same"),
    "y_proj_bias": ("recurrent_block.linear_y.bias", "same"),
    "x_proj": ("recurrent_block.linear_x.weight", "same"),
    "x_proj_bias": ("recurrent_block.linear_x.bias", "same"),
    "conv_weight": ("recurrent_block.conv_1d.w", "same"),
    "conv_bias": ("recurrent_block.conv_1d.b", "same"),
    "rglru_a_param": ("recurrent_block.rg_lru.a_param", "same"),
    "input_gate_weight": ("recurrent_block.rg_lru.input_gate.w", "same"),
    "input_gate_bias": ("recurrent_block.rg_lru.input_gate.b", "same"),
    "recurrence_gate_weight": ("recurrent_block.rg_lru.a_gate.w", "same"),
    "recurrence_gate_bias": ("recurrent_block.rg_lru.a_gate.b", "same"),
    "out_proj": ("recurrent_block.linear_out.weight", "same"),
    "out_proj_bias": ("recurrent_block.linear_out.bias", "same"),
    "q_proj": ("attention_block.proj_q.weight", "same"),
    "k_proj": ("attention_block.proj_k.weight", "same"),
    "v_proj": ("attention_block.proj_v.weight", "same"),
    "o_proj": ("attention_block.proj_final.weight", "same"),
    "o_proj_bias": ("attention_block.proj_final.bias", "same"),
    "mlp_norm": ("channel_pre_norm.scale", "norm"),
    "gate_proj": ("mlp_block.ffw_up.w", "up_weight_0"),
    "gate_proj_bias": ("mlp_block.ffw_up.b", "up_bias_0"),
    "up_proj": ("mlp_block.ffw_up.w", "up_weight_1"),
    "up_proj_bias": ("mlp_block.ffw_up.b", "up_bias_1"),
    "down_proj": ("mlp_block.ffw_down.weight", "same"),
    "down_proj_bias": ("mlp_block.ffw_down.bias", "same"),
}
GLOBAL_SOURCES = {"embedding": ("embedder.input_embedding", "same"),
                  "final_norm": ("final_norm.scale", "norm")}


def name_table(config):
    """{minigemma name: (official name, layout)} for every parameter of `config`."""
    table = dict(GLOBAL_SOURCES)
    for ours in parameter_shapes(config):
        if ours.startswith("layers."):
            _, i, local = ours.split(".", 2)
            source, layout = LAYER_SOURCES[local]
            table[ours] = (f"blocks.{i}.{source}", layout)
    return table


def source_shape(layout, shape):
    """The official shape behind a minigemma tensor of `shape` stored with `layout`."""
    if layout.startswith("up_weight"):
        F, D = shape
        return (2, D, F)
    if layout.startswith("up_bias"):
        return (2, 1, 1) + tuple(shape)
    return tuple(shape)


def from_official(layout, array):
    """An official tensor (float32) -> the minigemma tensor stored with `layout`."""
    if layout == "norm":
        return array + np.float32(1.0)  # zero-centred gain -> effective gain 1 + w
    if layout.startswith("up_weight"):
        return np.ascontiguousarray(array[int(layout[-1])].T)  # [D, F] -> [F, D]
    if layout.startswith("up_bias"):
        return np.ascontiguousarray(array[int(layout[-1]), 0, 0])  # [F]
    return array


CONFIG_ARGS = ("attention_window", "final_softcap", "max_position")  # not in a state dict


def config_from_state_dict(shapes, label="state dict", **given):
    """A GriffinConfig from {official name: shape}; `given` sets CONFIG_ARGS (module docstring).
    `label` names the source in errors."""
    unknown = set(given) - set(CONFIG_ARGS)
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)} for an official recurrentgemma "
                         f"state dict; it takes {', '.join(CONFIG_ARGS)}")

    def dim(name, axis, ndim):
        """Axis `axis` of tensor `name`, which must have `ndim` axes and be non-empty."""
        shape = shapes[name]
        if len(shape) != ndim or min(shape, default=0) <= 0:
            raise ValueError(f"{label}: tensor {name!r} has shape {tuple(shape)}; expected "
                             f"{ndim} positive dims")
        return int(shape[axis])
    if "embedder.input_embedding" not in shapes:
        raise ValueError(f"{label}: not an official recurrentgemma state dict: no "
                         f"'embedder.input_embedding'")
    vocab, width = dim("embedder.input_embedding", 0, 2), dim("embedder.input_embedding", 1, 2)
    kinds, heads = [], set()
    lru_width, conv_width = width, field_defaults(GriffinConfig)["conv_width"]
    while f"blocks.{len(kinds)}.channel_pre_norm.scale" in shapes:
        p = f"blocks.{len(kinds)}."
        if p + "recurrent_block.rg_lru.a_gate.w" in shapes:
            kinds.append("recurrent")
            heads.add(dim(p + "recurrent_block.rg_lru.a_gate.w", 0, 3))
            if p + "recurrent_block.linear_x.weight" in shapes:
                lru_width = dim(p + "recurrent_block.linear_x.weight", 0, 2)
            if p + "recurrent_block.conv_1d.w" in shapes:
                conv_width = dim(p + "recurrent_block.conv_1d.w", 0, 2)
        elif p + "attention_block.proj_k.weight" in shapes:
            kinds.append("attention")
            heads.add(width // dim(p + "attention_block.proj_k.weight", 0, 2))
        else:
            raise ValueError(f"{label}: state dict block {len(kinds)} is neither a recurrent "
                             f"nor an attention block")
    if not kinds or "blocks.0.mlp_block.ffw_up.w" not in shapes:
        raise ValueError(f"{label}: not an official recurrentgemma state dict: no 'blocks.0.*' "
                         f"tensors")
    if len(heads) != 1:
        raise ValueError(f"{label}: the RG-LRU gate blocks and the attention heads disagree on "
                         f"the number of heads: {sorted(heads)}")
    period = next(n for n in range(1, len(kinds) + 1)
                  if all(k == kinds[i % n] for i, k in enumerate(kinds)))
    try:
        return GriffinConfig(
            vocab_size=vocab, d_model=width, num_layers=len(kinds), num_heads=heads.pop(),
            lru_width=lru_width, ffn_dim=dim("blocks.0.mlp_block.ffw_up.w", 2, 3),
            conv_width=conv_width, num_kv_heads=1, block_pattern=tuple(kinds[:period]),
            window_includes_extra_key=True, **given)
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None


def load_state_dict(src):
    """A flat {name: tensor} from a `.pt` path (weights only, never pickled code) or a mapping;
    ValueError naming the file for anything else, or for a value that is not a float tensor."""
    label = "state dict"
    if isinstance(src, (str, os.PathLike)):
        label = os.fspath(src)
        try:
            import torch
        except ImportError:
            raise ValueError(f"{label}: reading a .pt checkpoint needs PyTorch "
                             f"(pip install torch)") from None
        try:
            try:
                src = torch.load(label, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # files from the old (non-zip) serialisation cannot be mapped
                src = torch.load(label, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, …
            raise ValueError(f"{label}: not a readable PyTorch state dict "
                             f"({type(e).__name__}: {e})") from None
    if not hasattr(src, "items") or not all(isinstance(k, str) for k in src):
        raise ValueError(f"{label}: an official recurrentgemma checkpoint must be a flat state "
                         f"dict {{name: tensor}}")
    for name, value in src.items():
        if not _is_float_tensor(value):
            raise ValueError(f"{label}: {name!r} must be a floating-point tensor, got "
                             f"{getattr(value, 'dtype', type(value).__name__)}")
    return src


def _is_float_tensor(value):
    if hasattr(value, "is_floating_point"):  # torch
        return value.is_floating_point()
    return isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)


def _to_float32(value):
    if hasattr(value, "detach"):  # a torch tensor (bf16 has no NumPy dtype: go through f32)
        import torch
        return value.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)


def official_tensors(src, storage="f32", tokenizer_path=None, **config_args):
    """The ConvertedModel of an official state dict, matrices stored as `storage`.

    src: a `.pt` path or an in-memory state dict. config_args: CONFIG_ARGS (attention_window,
    final_softcap, max_position), which a state dict does not record. The tokenizer is
    `tokenizer_path`, or a `tokenizer.model` beside the `.pt` file when there is one.
    """
    if storage not in ("f32", "bf16"):
        raise ValueError(f"storage must be 'f32' or 'bf16', got {storage!r}")
    is_file = isinstance(src, (str, os.PathLike))
    label = os.fspath(src) if is_file else "state dict"
    state = load_state_dict(src)
    shapes = {name: tuple(value.shape) for name, value in state.items()}
    config = config_from_state_dict(shapes, label, **config_args)
    table = name_table(config)
    ours_shapes = parameter_shapes(config)
    expected = {source: source_shape(layout, ours_shapes[ours])
                for ours, (source, layout) in table.items()}
    check_tensor_names(label, shapes, expected, "the recurrentgemma converter")

    def produce(ours):
        source, layout = table[ours]
        return from_official(layout, _to_float32(state[source]))

    tensors = [(ours, shape, storage_of(ours, storage), lambda ours=ours: produce(ours))
               for ours, shape in ours_shapes.items()]
    embedding_dtype = {"f32": "float32", "bf16": "bfloat16"}[storage]
    if tokenizer_path is None and is_file:
        tokenizer_path = os.path.join(os.path.dirname(os.path.abspath(src)), "tokenizer.model")
    tokenizer_bytes = read_tokenizer_file(tokenizer_path, config)
    source = (f"recurrentgemma-torch:{os.path.basename(os.fspath(src))}" if is_file
              else "recurrentgemma-torch:state-dict")
    return ConvertedModel(config, tensors, embedding_dtype, tokenizer_bytes, source)


def convert_official(src, dst, dtype=None, overwrite=False, **config_args):
    """`minigemma.formats.convert.convert` for an official state dict, without a progress bar;
    kept for the callers that name it (tests/models/test_griffin_oracle.py)."""
    from minigemma.formats.convert import convert
    return convert(src, dst, dtype=dtype, progress=False, overwrite=overwrite, **config_args)
