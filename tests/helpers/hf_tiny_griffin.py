"""Tiny random-weight RecurrentGemma oracles: HF `RecurrentGemmaForCausalLM` and the official
`recurrentgemma` PyTorch `Griffin` holding the same weights.

HF initialises small weights (std 0.02, norm gains 0, RG-LRU gates near 0.5), which would hide a
wrong component under 1e-4. We re-draw: weights std 0.15 (embedding 0.4), norm gains std 0.5,
conv taps std 0.3, RG-LRU gate matrices std 1/√bs with biases std 0.5 (gates spread over
(0, 1), not saturated), and the RG-LRU parameter so that the base decay exp(−softplus(θ)) is
uniform in [0.6, 0.99] (decays that matter over the whole sequence). Shapes are odd on
purpose: lru_width ≠ d_model, several heads, small windows, caps that bite.
"""
import math

import numpy as np

from helpers.hf_tiny_models import _torch, hf_logits  # noqa: F401  (one lazy torch import; hf_logits re-exported)

CASES = {
    # name: HF RecurrentGemmaConfig arguments (intermediate_size = 2 × per-branch width)
    "rg-mqa": dict(hidden_size=48, intermediate_size=2 * 40, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=1, lru_width=48,
                   attention_window_size=8, conv1d_width=4, logits_soft_cap=30.0),
    "rg-wide-lru-cap": dict(hidden_size=36, intermediate_size=2 * 44, num_hidden_layers=6,
                            num_attention_heads=3, num_key_value_heads=1, lru_width=54,
                            attention_window_size=11, conv1d_width=4, logits_soft_cap=6.0),
    "rg-gqa-conv3": dict(hidden_size=32, intermediate_size=2 * 24, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, lru_width=40,
                         attention_window_size=16, conv1d_width=3, logits_soft_cap=10.0,
                         block_types=("recurrent", "attention")),
}
# The official code has one key/value head and a conv width of 4.
OFFICIAL_CASES = sorted(n for n, c in CASES.items()
                        if c["num_key_value_heads"] == 1 and c["conv1d_width"] == 4)
VOCAB = 103


def make_hf_model(case, folder=None, seed=0):
    """Build the HF model of `case`, re-draw its weights, save it to `folder`; return the model."""
    t = _torch()
    import transformers as tf
    config = tf.RecurrentGemmaConfig(vocab_size=VOCAB, **CASES[case])
    config._attn_implementation = "eager"
    t.manual_seed(seed)
    model = tf.RecurrentGemmaForCausalLM(config).eval()
    gen = t.Generator().manual_seed(seed)

    def randn(shape, std):
        return std * t.randn(shape, generator=gen)
    with t.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(randn(p.shape, 0.5))
            elif "embed" in name:
                p.copy_(randn(p.shape, 0.4))
            elif name.endswith("recurrent_param"):
                base_decay = 0.6 + 0.39 * t.rand(p.shape, generator=gen)
                p.copy_(t.log(t.expm1(-t.log(base_decay))))  # softplus(θ) = −log(base decay)
            elif name.endswith("gate_weight"):
                p.copy_(randn(p.shape, 1.0 / math.sqrt(p.shape[-1])))
            elif name.endswith("gate_bias"):
                p.copy_(randn(p.shape, 0.5))
            elif "conv_1d" in name:
                p.copy_(randn(p.shape, 0.3))
            else:
                p.copy_(randn(p.shape, 0.15))
    if folder is not None:
        model.save_pretrained(folder)
    return model


def official_state_dict(hf_model):
    """The HF model's weights under the official `recurrentgemma.torch.Griffin` names/layouts."""
    t = _torch()
    hf = {k: v.detach().clone() for k, v in hf_model.state_dict().items() if k != "lm_head.weight"}
    out = {"embedder.input_embedding": hf.pop("model.embed_tokens.weight"),
           "final_norm.scale": hf.pop("model.final_norm.weight")}
    renames = {
        "temporal_pre_norm.weight": "temporal_pre_norm.scale",
        "channel_pre_norm.weight": "channel_pre_norm.scale",
        "temporal_block.linear_x.weight": "recurrent_block.linear_x.weight",
        "temporal_block.linear_x.bias": "recurrent_block.linear_x.bias",
        "temporal_block.linear_y.weight": "recurrent_block.linear_y.weight",
        "temporal_block.linear_y.bias": "recurrent_block.linear_y.bias",
        "temporal_block.linear_out.weight": "recurrent_block.linear_out.weight",
        "temporal_block.linear_out.bias": "recurrent_block.linear_out.bias",
        "temporal_block.conv_1d.bias": "recurrent_block.conv_1d.b",
        "temporal_block.rg_lru.recurrent_param": "recurrent_block.rg_lru.a_param",
        "temporal_block.rg_lru.input_gate_weight": "recurrent_block.rg_lru.input_gate.w",
        "temporal_block.rg_lru.input_gate_bias": "recurrent_block.rg_lru.input_gate.b",
        "temporal_block.rg_lru.recurrent_gate_weight": "recurrent_block.rg_lru.a_gate.w",
        "temporal_block.rg_lru.recurrent_gate_bias": "recurrent_block.rg_lru.a_gate.b",
        "temporal_block.q_proj.weight": "attention_block.proj_q.weight",
        "temporal_block.k_proj.weight": "attention_block.proj_k.weight",
        "temporal_block.v_proj.weight": "attention_block.proj_v.weight",
        "temporal_block.o_proj.weight": "attention_block.proj_final.weight",
        "temporal_block.o_proj.bias": "attention_block.proj_final.bias",
        "mlp_block.down_proj.weight": "mlp_block.ffw_down.weight",
        "mlp_block.down_proj.bias": "mlp_block.ffw_down.bias",
    }
    for i in range(hf_model.config.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        for a, b in renames.items():
            if src + a in hf:
                out[dst + b] = hf.pop(src + a)
        if src + "temporal_block.conv_1d.weight" in hf:  # [L, 1, W] -> [W, L]
            out[dst + "recurrent_block.conv_1d.w"] = (
                hf.pop(src + "temporal_block.conv_1d.weight")[:, 0, :].T.contiguous())
        gate_w, up_w = hf.pop(src + "mlp_block.gate_proj.weight"), hf.pop(src + "mlp_block.up_proj.weight")
        gate_b, up_b = hf.pop(src + "mlp_block.gate_proj.bias"), hf.pop(src + "mlp_block.up_proj.bias")
        out[dst + "mlp_block.ffw_up.w"] = t.stack([gate_w.T, up_w.T]).contiguous()  # [2, D, F]
        out[dst + "mlp_block.ffw_up.b"] = t.stack([gate_b, up_b])[:, None, None, :].contiguous()
    assert not hf, f"unmapped HF tensors {sorted(hf)}"
    return out


def make_official_model(case, state_dict):
    """The official `recurrentgemma.torch.Griffin` of `case` (float32) holding `state_dict`."""
    import recurrentgemma.torch as rg
    from recurrentgemma import common
    c = CASES[case]
    pattern = c.get("block_types", ("recurrent", "recurrent", "attention"))
    kinds = {"recurrent": common.TemporalBlockType.RECURRENT,
             "attention": common.TemporalBlockType.ATTENTION}
    config = rg.GriffinConfig(
        vocab_size=VOCAB, width=c["hidden_size"], mlp_expanded_width=c["intermediate_size"] // 2,
        num_heads=c["num_attention_heads"], lru_width=c["lru_width"],
        block_types=tuple(kinds[pattern[i % len(pattern)]] for i in range(c["num_hidden_layers"])),
        embeddings_scale_by_sqrt_dim=True, attention_window_size=c["attention_window_size"],
        logits_soft_cap=c["logits_soft_cap"])
    model = rg.Griffin(config, gradient_checkpointing=False, dtype=_torch().float32).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def official_logits(model, ids):
    """ids [B, T] -> float32 logits [B, T, V] from the official model's forward pass."""
    t = _torch()
    ids = t.tensor(np.asarray(ids), dtype=t.long)
    pos = t.arange(ids.shape[1])[None].expand(ids.shape[0], -1).contiguous()
    with t.no_grad():
        logits, _ = model(ids, pos, return_cache=False)
    return logits.float().numpy()


def official_decode_logits(model, ids, prompt):
    """Prefill `prompt` tokens, then decode the rest one at a time with the official cache."""
    t = _torch()
    ids = t.tensor(np.asarray(ids), dtype=t.long)
    B, T = ids.shape
    pos = t.arange(T)[None].expand(B, -1).contiguous()
    out = []
    with t.no_grad():
        logits, cache = model(ids[:, :prompt], pos[:, :prompt])
        out.append(logits)
        for i in range(prompt, T):
            logits, cache = model(ids[:, i:i + 1], pos[:, i:i + 1], cache)
            out.append(logits)
    return t.cat(out, dim=1).float().numpy()
