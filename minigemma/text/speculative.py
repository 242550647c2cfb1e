"""Exact speculative decoding without a draft model: drafts by prompt lookup, one verifying forward.

Speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding", §2.3; Chen et al. 2023) guesses k tokens cheaply and lets the model check them all in
one forward of k + 1 positions: decoding on a CPU is bound by reading the weights, so k + 1
positions cost little more than one. Prompt lookup (Saxena 2023, "Prompt Lookup Decoding", as in
HF transformers' `prompt_lookup_num_tokens`) guesses by matching the last n tokens of the text so
far against earlier text: when a model rewrites, quotes or edits text it was given, what
followed the earlier occurrence is what comes next.

    draft    d_1 … d_k = the k tokens after the latest earlier occurrence of the last n tokens
             (n = max_ngram, …, 1: the longest n that matches)
    verify   p_i = the model's next-token distribution after x, d_1 … d_i  (one forward)
    accept   d_{i+1} with probability min(1, p_i(d_{i+1}) / q_i(d_{i+1}))
    reject   at the first refusal i, draw from norm(max(0, p_i − q_i)) and stop
    bonus    if all k are accepted, draw from p_k

The drafter is deterministic, so q_i is one-hot on d_{i+1}: acceptance has probability
p_i(d_{i+1}), and the residual max(0, p_i − q_i) is p_i with d_{i+1} removed. Every emitted token
is then distributed exactly as plain sampling from p would give it (Leviathan et al., Theorem 1),
whatever the drafts are. Greedy decoding is the case p_i one-hot: a draft is accepted iff it is
the argmax, so the output is plain greedy's. p_i is the sampler's own distribution
(`minigemma.text.sampling.probabilities`: temperature, top-k, top-p, min-p, repetition penalty
with the accepted drafts counted as context).
"""
from dataclasses import dataclass

import numpy as np

from minigemma.text.sampling import apply_repetition_penalty, probabilities


@dataclass(frozen=True)
class PromptLookup:
    """How to draft: up to `num_draft` tokens after a match of the last `max_ngram` … `min_ngram`
    tokens. `speculative=True` means PromptLookup(); an integer k means PromptLookup(k)."""
    num_draft: int = 3  # 1 + 3 positions: the Numba matvec's group of four rows of x
    max_ngram: int = 3
    min_ngram: int = 1

    def __post_init__(self):
        for name in ("num_draft", "max_ngram", "min_ngram"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"speculative decoding: {name} must be an integer >= 1, got "
                                 f"{value!r}")
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"speculative decoding: min_ngram {self.min_ngram} exceeds "
                             f"max_ngram {self.max_ngram}")

    @classmethod
    def from_value(cls, value):
        """None / False -> None; True -> the defaults; k -> k drafts; a PromptLookup as it is."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, int):
            return cls(num_draft=value)
        raise ValueError(f"speculative must be True, False, a number of draft tokens or a "
                         f"PromptLookup, got {value!r}")


def draft(history, lookup, limit):
    """Up to min(limit, lookup.num_draft) draft tokens: what followed the latest earlier
    occurrence of the text's last n tokens, for the longest n that matches; [] if none.

        draft([5, 6, 7, 9, 5, 6], PromptLookup(2), 2) == [7, 9]
    """
    k = min(limit, lookup.num_draft)
    ids = np.asarray(history, dtype=np.int64)
    T = ids.size
    if k <= 0:
        return []
    for n in range(min(lookup.max_ngram, T - 1), lookup.min_ngram - 1, -1):
        tail = ids[T - n:]
        windows = np.lib.stride_tricks.sliding_window_view(ids[:T - 1], n)  # starts 0 … T−1−n
        starts = np.flatnonzero((windows == tail).all(axis=1))
        if starts.size:
            follow = int(starts[-1]) + n  # the latest match; its continuation exists (< T)
            return ids[follow:follow + k].tolist()
    return []


def verify(sampler, logits, drafts, context):
    """The tokens to emit after checking `drafts` against the model.

    logits: [len(drafts) + 1, V], row i the logits after context + drafts[:i]; sampler: the
    row's Sampler (its params and random generator); context: the token ids so far.
    Returns drafts[:j] + [one more token]: the accepted drafts, then the correction drawn from
    the residual at the first rejection, or the bonus drawn from the last row if all are
    accepted (the module docstring's rule).
    """
    params, out = sampler.params, []
    for i, d in enumerate(drafts):
        seen = list(context) + out
        if params.greedy:  # p_i is one-hot on the argmax: accept iff d is the argmax
            best = _argmax(logits[i], seen, params.repetition_penalty)
            if best != d:
                return out + [best]
            out.append(d)
            continue
        p = probabilities(logits[i], params, seen)
        if sampler.rng.random() < p[d]:  # accept with min(1, p(d) / q(d)), q(d) = 1
            out.append(d)
            continue
        residual = p.copy()  # max(0, p − q) with q one-hot on d
        residual[d] = 0.0
        return out + [int(sampler.rng.choice(residual.size, p=residual / residual.sum()))]
    if params.greedy:
        return out + [_argmax(logits[len(drafts)], list(context) + out,
                              params.repetition_penalty)]
    return out + [sampler(logits[len(drafts)], list(context) + out)]


def _argmax(logits, seen, penalty):
    """The greedy choice, as `Sampler` makes it (lowest id on ties); without a penalty, straight
    from the float32 logits (the float64 copy the penalty needs orders them the same)."""
    if penalty == 1.0:
        return int(np.argmax(logits))
    return int(np.argmax(apply_repetition_penalty(logits, seen, penalty)))
