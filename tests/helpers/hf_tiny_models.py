"""Tiny random-weight HF transformers models (the oracle), saved with save_pretrained.

HF initialises weights with std 0.02 and norm gains at 0, which makes logits tiny enough to hide
a wrong component under 1e-4. We re-draw every weight (std 0.15, embedding 0.4) and every norm
gain (std 0.5) so logits are O(1–10), and pick odd shapes: head_dim ≠ D/N, small windows,
soft-caps that bite.
"""
import numpy as np

torch = None


def _torch():
    global torch
    if torch is None:
        import torch as _t
        torch = _t
    return torch


CASES = {
    # name: (family, config kwargs)
    "gemma-mqa": ("gemma", dict(hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=16)),
    "gemma-mha": ("gemma", dict(hidden_size=30, intermediate_size=44, num_hidden_layers=2,
                                num_attention_heads=3, num_key_value_heads=3, head_dim=20)),
    "gemma2-gqa-headdim-scale": ("gemma2", dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, sliding_window=6, query_pre_attn_scalar=12,
        attn_logit_softcapping=1.5, final_logit_softcapping=2.5)),
    "gemma2-mqa-dn-scale": ("gemma2", dict(
        hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, sliding_window=5, query_pre_attn_scalar=48 // 4,
        attn_logit_softcapping=3.0, final_logit_softcapping=4.0)),
    "gemma3-gqa": ("gemma3", dict(
        hidden_size=40, intermediate_size=56, num_hidden_layers=7, num_attention_heads=4,
        num_key_value_heads=2, head_dim=14, sliding_window=5, query_pre_attn_scalar=14)),
    "gemma3-mqa-dn-scale": ("gemma3", dict(
        hidden_size=36, intermediate_size=48, num_hidden_layers=6, num_attention_heads=3,
        num_key_value_heads=1, head_dim=16, sliding_window=7, query_pre_attn_scalar=12)),
    # every matrix input width a multiple of 32, for block-quantized storage
    "gemma3-aligned-32": ("gemma3", dict(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, sliding_window=4, query_pre_attn_scalar=32)),
}
VOCAB = 101


def _hf_classes(family):
    import transformers as tf
    return {"gemma": (tf.GemmaConfig, tf.GemmaForCausalLM),
            "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM),
            "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM)}[family]


def make_hf_model(case, folder, seed=0):
    """Build the HF model of `case`, re-draw its weights, save it to `folder`; return the model."""
    t = _torch()
    family, kwargs = CASES[case]
    config_cls, model_cls = _hf_classes(family)
    config = config_cls(vocab_size=VOCAB, max_position_embeddings=128, **kwargs)
    config._attn_implementation = "eager"
    t.manual_seed(seed)
    model = model_cls(config).eval()
    gen = t.Generator().manual_seed(seed)
    with t.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 * t.randn(p.shape, generator=gen))
            elif "embed" in name:
                p.copy_(0.4 * t.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * t.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    return model


def hf_logits(model, ids):
    """ids [B, T] -> float32 logits [B, T, V] from the HF model (float32, eager)."""
    t = _torch()
    with t.no_grad():
        out = model(input_ids=t.tensor(np.asarray(ids), dtype=t.long), use_cache=False)
    return out.logits.float().numpy()
