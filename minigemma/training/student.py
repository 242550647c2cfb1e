"""The student a run trains, and the windows it trains on (docs/training.md#training-a-student).

    student_config   a Gemma 3-architecture GemmaConfig with the teacher's vocabulary
    init_params      its initial weights
    Windows          token windows [N, T], BOS first, and for distillation the teacher's sparse
                     targets of every position; batches in a seeded order, epoch after epoch
"""
from dataclasses import dataclass

import numpy as np

from minigemma.models.config import GemmaConfig
from minigemma.models.gemma import Transformer

# the student

def student_config(vocab_size, num_layers=4, d_model=128, num_heads=4, num_kv_heads=1,
                   head_dim=32, ffn_dim=512, window=32, context=128, bos_id=2, eos_id=1,
                   pad_id=0):
    """A Gemma 3-architecture GemmaConfig: local layers with the last one global (Gemma 3 has
    five local to one global; a 4-layer student keeps one global), QK-norm, sandwich norms,
    RoPE bases 10 000 (local) and 1 000 000 (global), query scale head_dim^(−½)."""
    layer_types = tuple("global" if i == num_layers - 1 else "local" for i in range(num_layers))
    return GemmaConfig(family="gemma3", vocab_size=vocab_size, d_model=d_model,
                       num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
                       head_dim=head_dim, ffn_dim=ffn_dim, layer_types=layer_types,
                       sliding_window=window, rope_base_global=1_000_000.0,
                       rope_base_local=10_000.0, query_pre_attn_scalar=float(head_dim),
                       qk_norm=True, post_norms=True, max_position=context, bos_id=bos_id,
                       eos_id=eos_id, pad_id=pad_id)


def add_student_arguments(p):
    """The student's shape as command-line options, defaulting to `student_config`'s."""
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=1)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--ffn-dim", type=int, default=512)
    p.add_argument("--window", type=int, default=32, help="sliding window of the local layers")


def student_config_from_args(args, vocab_size, context, tokenizer):
    """`student_config` from the options of `add_student_arguments`, with the tokenizer's ids."""
    return student_config(vocab_size, args.layers, args.d_model, args.heads, args.kv_heads,
                          args.head_dim, args.ffn_dim, args.window, context, tokenizer.bos_id,
                          tokenizer.eos_id, tokenizer.pad_id or 0)


def init_params(config, seed=0, std=0.02):
    """Initial weights: every matrix (the embedding too) N(0, std²), every norm gain 1 (w = 0,
    as Gemma initialises its zero-centred gains)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in Transformer.parameter_shapes(config).items():
        if name.endswith("_norm"):
            params[name] = np.ones(shape, np.float32)
        else:
            params[name] = (std * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    return params


def build_student(config, params, backend):
    """The Transformer of `config` holding `params`, on `backend` (a name or a backend)."""
    from minigemma.backends import get_backend
    be = get_backend(backend)
    return Transformer(config, {k: be.prepare_weight(v) for k, v in params.items()}, be)


# the data

@dataclass
class Windows:
    """Training windows: tokens [N, T] (BOS first) and, for distillation, the teacher's sparse
    targets for every position (N·T rows, window after window)."""
    tokens: np.ndarray
    teacher_ids: np.ndarray = None  # [N, T, k] int32
    teacher_probs: np.ndarray = None  # [N, T, k] float32
    vocab_size: int = None
    temperature: float = 1.0

    def __len__(self):
        return self.tokens.shape[0]

    @property
    def context(self):
        return self.tokens.shape[1]

    def batch(self, step, batch_size, seed):
        """The window indices of update `step`: each epoch a seeded permutation of the windows,
        batches taken in order across epoch boundaries (deterministic, so a resumed run sees
        what the uninterrupted one would have)."""
        N, picked = len(self), []
        for i in range(step * batch_size, (step + 1) * batch_size):
            epoch, j = divmod(i, N)
            picked.append(np.random.default_rng([seed, epoch]).permutation(N)[j])
        return np.array(picked)

    def teacher(self, rows):
        from minigemma.training.losses import SparseTeacher
        k = self.teacher_ids.shape[-1]
        return SparseTeacher(self.teacher_ids[rows].reshape(-1, k),
                             self.teacher_probs[rows].reshape(-1, k), self.vocab_size)


def windows_from_targets(path):
    """Windows of a `minigemma distill capture --text` file: its full-length windows (the
    last, shorter one is dropped), with their targets."""
    from minigemma.training.distill import DistillTargets
    targets = DistillTargets.load(path)
    lengths = np.diff(targets.offsets)
    context = int(lengths.max())
    tokens, ids, probs = [], [], []
    for seq, first, sparse in targets.sequences():
        if len(seq) == context and first == 0:
            tokens.append(seq)
            ids.append(sparse.ids)
            probs.append(sparse.probs)
    if not tokens:
        raise ValueError(f"{path} has no full-length windows starting at position 0 (capture "
                         f"text windows with `minigemma distill capture --text`)")
    return Windows(np.stack(tokens).astype(np.int64), np.stack(ids), np.stack(probs),
                   targets.teacher.vocab_size, float(targets.meta.get("temperature", 1.0)))


def windows_from_text(tokenizer, text, context):
    """Full windows of BOS + context − 1 tokens of `text` (distill.text_windows, last dropped)."""
    from minigemma.training.distill import text_windows
    windows = [w for w in text_windows(tokenizer, text, context) if len(w) == context]
    if not windows:
        raise ValueError(f"the text has fewer than {context - 1} tokens: no window to train on")
    return Windows(np.array(windows, dtype=np.int64))
