"""Import of official `recurrentgemma` PyTorch checkpoints (google-deepmind/recurrentgemma,
`recurrentgemma.torch.Griffin`): a flat state dict {name: tensor}, from a `.pt` file (read with
`torch.load(..., weights_only=True)`, never unpickling code) or already in memory. The only
place the official tensor names appear (docs/formats.md#official-recurrentgemma; recurrentgemma's `torch/modules.py`, `torch/layers.py`).

A state dict records shapes but not every hyperparameter. Inferred from shapes: vocabulary,
width, layer kinds, heads (RG-LRU gate blocks or key width), RG-LRU width, MLP width, conv
width. Not recorded, so given as arguments with the released RecurrentGemma values as
defaults: the attention window (2048) and the final soft-cap (30). The official local
attention admits W + 1 keys per query, so the config says window_includes_extra_key=True.

Strict: every source tensor is consumed, every shape checked. Layout changes, each in one place:
    mlp_block.ffw_up.w [2, D, F] -> gate_proj = w[0]ᵀ, up_proj = w[1]ᵀ   [F, D]
    mlp_block.ffw_up.b [2, 1, 1, F] -> gate_proj_bias = b[0, 0, 0], up_proj_bias = b[1, 0, 0]
    norm scale w -> 1 + w, in float32
"""
import os

import numpy as np

from minigemma.formats.hf_griffin import storage_of
from minigemma.formats.native import write_checkpoint
from minigemma.models.config import GriffinConfig
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


def config_from_state_dict(shapes, attention_window=2048, final_softcap=30.0, max_position=8192):
    """A GriffinConfig from {official name: shape}; see the module docstring for what is given."""
    if "embedder.input_embedding" not in shapes:
        raise ValueError("not an official recurrentgemma state dict: no 'embedder.input_embedding'")
    vocab, width = shapes["embedder.input_embedding"]
    kinds, heads, lru_width, conv_width = [], set(), width, 4
    while f"blocks.{len(kinds)}.channel_pre_norm.scale" in shapes:
        p = f"blocks.{len(kinds)}."
        if p + "recurrent_block.rg_lru.a_gate.w" in shapes:
            kinds.append("recurrent")
            heads.add(shapes[p + "recurrent_block.rg_lru.a_gate.w"][0])
            lru_width = shapes[p + "recurrent_block.linear_x.weight"][0]
            conv_width = shapes[p + "recurrent_block.conv_1d.w"][0]
        elif p + "attention_block.proj_k.weight" in shapes:
            kinds.append("attention")
            heads.add(width // shapes[p + "attention_block.proj_k.weight"][0])
        else:
            raise ValueError(f"state dict block {len(kinds)} is neither a recurrent nor an "
                             f"attention block")
    if not kinds or "blocks.0.mlp_block.ffw_up.w" not in shapes:
        raise ValueError("not an official recurrentgemma state dict: no 'blocks.0.*' tensors")
    if len(heads) != 1:
        raise ValueError(f"the RG-LRU gate blocks and the attention heads disagree on the number "
                         f"of heads: {sorted(heads)}")
    period = next(n for n in range(1, len(kinds) + 1)
                  if all(k == kinds[i % n] for i, k in enumerate(kinds)))
    return GriffinConfig(
        vocab_size=vocab, d_model=width, num_layers=len(kinds), num_heads=heads.pop(),
        lru_width=lru_width, ffn_dim=shapes["blocks.0.mlp_block.ffw_up.w"][-1],
        attention_window=attention_window, conv_width=conv_width, num_kv_heads=1,
        final_softcap=final_softcap, block_pattern=tuple(kinds[:period]),
        window_includes_extra_key=True, max_position=max_position)


def load_state_dict(src):
    """A flat {name: tensor} from a `.pt` path (weights only, never pickled code) or a mapping."""
    if isinstance(src, (str, os.PathLike)):
        try:
            import torch
        except ImportError:
            raise ValueError(f"{src}: reading a .pt checkpoint needs PyTorch "
                             f"(pip install torch)") from None
        try:
            src = torch.load(os.fspath(src), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files from the old (non-zip) serialisation cannot be mapped
            src = torch.load(os.fspath(src), map_location="cpu", weights_only=True)
    if not hasattr(src, "items") or not all(isinstance(k, str) for k in src):
        raise ValueError("an official recurrentgemma checkpoint must be a flat state dict "
                         "{name: tensor}")
    return src


def _to_float32(value):
    if hasattr(value, "detach"):  # a torch tensor (bf16 has no NumPy dtype: go through f32)
        import torch
        return value.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)


def official_tensors(src, storage="f32", attention_window=2048, final_softcap=30.0,
                     max_position=8192, tokenizer_path=None):
    """(config, embedding dtype, tensor list for `write_checkpoint`, tokenizer bytes or None).

    src: a `.pt` path or an in-memory state dict. The tokenizer is `tokenizer_path`, or a
    `tokenizer.model` beside the `.pt` file when there is one.
    """
    if storage not in ("f32", "bf16"):
        raise ValueError(f"storage must be 'f32' or 'bf16', got {storage!r}")
    label = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "state dict"
    state = load_state_dict(src)
    shapes = {name: tuple(value.shape) for name, value in state.items()}
    config = config_from_state_dict(shapes, attention_window, final_softcap, max_position)
    table = name_table(config)
    ours_shapes = parameter_shapes(config)
    used = {source for source, _ in table.values()}
    leftover = sorted(set(shapes) - used)
    if leftover:
        raise ValueError(f"{label}: tensors the recurrentgemma converter does not know: "
                         f"{leftover[:5]}{' …' if len(leftover) > 5 else ''}")
    missing = sorted(used - set(shapes))
    if missing:
        raise ValueError(f"{label}: missing tensors {missing[:5]}"
                         f"{' …' if len(missing) > 5 else ''}")
    for ours, (source, layout) in table.items():
        expected = source_shape(layout, ours_shapes[ours])
        if shapes[source] != expected:
            raise ValueError(f"{label}: tensor {source!r} has shape {shapes[source]}, the config "
                             f"needs {expected}")

    def produce(ours):
        source, layout = table[ours]
        return from_official(layout, _to_float32(state[source]))

    tensors = [(ours, shape, storage_of(ours, storage), lambda ours=ours: produce(ours))
               for ours, shape in ours_shapes.items()]
    embedding_dtype = {"f32": "float32", "bf16": "bfloat16"}[storage]
    if tokenizer_path is None and isinstance(src, (str, os.PathLike)):
        tokenizer_path = os.path.join(os.path.dirname(os.path.abspath(src)), "tokenizer.model")
    tokenizer_bytes = None
    if tokenizer_path is not None and os.path.isfile(tokenizer_path):
        with open(tokenizer_path, "rb") as f:
            tokenizer_bytes = f.read()
    return config, embedding_dtype, tensors, tokenizer_bytes


def convert_official(src, dst, dtype="f32", overwrite=False, **config_args):
    """Write a minigemma checkpoint at `dst` from an official state dict (path or mapping).

    config_args: attention_window, final_softcap, max_position, tokenizer_path (see
    `official_tensors`). Returns dst.
    """
    config, embedding_dtype, tensors, tokenizer_bytes = official_tensors(src, dtype, **config_args)
    source = (f"recurrentgemma-torch:{os.path.basename(os.fspath(src))}"
              if isinstance(src, (str, os.PathLike)) else "recurrentgemma-torch:state-dict")
    return write_checkpoint(dst, config, tensors, embedding_dtype=embedding_dtype, source=source,
                            tokenizer_bytes=tokenizer_bytes, overwrite=overwrite)
