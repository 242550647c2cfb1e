"""Scoring text: per-token log-probabilities and perplexity over a sliding window.

    log p(x_t | x_<t) = log_softmax(logits_{t−1})[x_t]                 per token
    perplexity        = exp(−(1/N) Σ_t log p(x_t | context of x_t))      over N scored tokens

A text longer than the window is scored as HF transformers' recipe does ("Perplexity of
fixed-length models"): windows of `context` tokens start every `stride` tokens, and each window
scores only the tokens that no earlier window scored, so every token is predicted from at least
context − stride tokens before it (all of them in the first window). Gemma is trained with BOS
first and does not work without it, so, as llama.cpp's perplexity does, every window starts
with BOS: window w is [BOS] + x[begin_w : end_w], end_w − begin_w ≤ context − 1. The first
window also scores x_1 after BOS. A text that fits one window is scored exactly as HF's
`model(ids, labels=ids).loss` scores the BOS-first ids.

Log-probabilities are computed in float64 from the float32 logits, a few rows at a time.
"""
from dataclasses import dataclass

import numpy as np

ROWS_PER_HEAD = 64  # positions whose logits [rows, V] exist at once


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    nll: float  # mean negative log-likelihood per scored token, nats
    tokens: int  # tokens scored
    windows: int

    def summary(self):
        return (f"perplexity {self.perplexity:.4f} (mean NLL {self.nll:.4f} nats over "
                f"{self.tokens} tokens, {self.windows} windows)")


def token_logprobs(model, ids, first=1):
    """ids [T] (BOS first) -> np.ndarray [T − first] float64: log p(ids[t] | ids[:t]) for
    t = first … T − 1. The whole sequence must fit the model's context."""
    ids = list(ids)
    if len(ids) < 2:
        raise ValueError(f"scoring needs at least two tokens (BOS and one more), got {len(ids)}")
    if len(ids) > model.config.max_position:
        raise ValueError(f"{len(ids)} tokens do not fit the model's context of "
                         f"{model.config.max_position}; use perplexity(..., context=N)")
    if not 1 <= first < len(ids):
        raise ValueError(f"first must be in [1, {len(ids) - 1}], got {first}")
    h = model.hidden_states(ids)[-1]  # [T, D]: the head applied a few rows at a time below
    targets = np.asarray(ids, dtype=np.int64)
    out = []
    for start in range(first - 1, len(ids) - 1, ROWS_PER_HEAD):
        stop = min(start + ROWS_PER_HEAD, len(ids) - 1)
        logits = model.unembed(h[None, start:stop])[0].astype(np.float64)  # [rows, V]
        top = logits.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        out.append(logits[np.arange(stop - start), targets[start + 1:stop + 1]] - log_z)
    return np.concatenate(out)


def perplexity(model, ids, context=None, stride=None, bos_id=None):
    """Perplexity of the token ids `ids` (a leading BOS is dropped: each window adds its own)
    with windows of `context` tokens (default: 512, at most the model's context) every
    `stride` tokens (default: context // 2). Returns a Perplexity."""
    bos = model.config.bos_id if bos_id is None else bos_id
    ids = list(ids)
    if ids and ids[0] == bos:
        ids = ids[1:]
    context = min(512, model.config.max_position) if context is None else context
    if isinstance(context, bool) or not isinstance(context, int) or \
            not 2 <= context <= model.config.max_position:
        raise ValueError(f"context must be an integer in [2, {model.config.max_position}] "
                         f"(the model's context), got {context!r}")
    stride = max(1, context // 2) if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= context - 1:
        raise ValueError(f"stride must be an integer in [1, context − 1 = {context - 1}], "
                         f"got {stride!r}")
    if not ids:
        raise ValueError("nothing to score: the text has no tokens after BOS")
    span = context - 1  # text tokens per window, after its BOS
    total, scored, windows, done = 0.0, 0, 0, 0  # done: text tokens scored so far
    for begin in range(0, len(ids), stride):
        end = min(begin + span, len(ids))
        window = [bos] + ids[begin:end]
        new = end - done  # tokens of this window not scored before: its last `new`
        logp = token_logprobs(model, window, first=len(window) - new)
        total -= float(logp.sum())
        scored += new
        windows += 1
        done = end
        if end == len(ids):
            break
    nll = total / scored
    return Perplexity(float(np.exp(nll)), nll, scored, windows)
