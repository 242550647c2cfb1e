"""Next-token sampling: repetition penalty, temperature, top-k, top-p, min-p.

The sampler turns the logits of the next position (`[V]`) into one token id. Order of operations:

    1. repetition penalty          (on the raw logits)
    2. temperature == 0 -> argmax  (greedy; ties go to the lowest id)  -- done
    3. temperature scaling
    4. top-k
    5. top-p (nucleus)
    6. min-p
    7. softmax in float64, then one draw from the sampler's np.random.Generator

This is Hugging Face transformers' order (`GenerationMixin._get_logits_processor`): logits
processors such as `RepetitionPenaltyLogitsProcessor` come first, then, when sampling,
`TemperatureLogitsWarper` -> `TopKLogitsWarper` -> `TopPLogitsWarper` -> `MinPLogitsWarper`
(transformers notes that min-p is applied after temperature, following llama.cpp PR #3841), then
softmax and a multinomial draw; greedy search is an argmax of the processed logits. llama.cpp's
default chain (`common_params_sampling::samplers`) is penalties -> dry -> top-n-sigma -> top-k ->
typical-p -> top-p -> min-p -> xtc -> temperature -> dist: the same relative order of penalty,
top-k, top-p and min-p, but with temperature *last*, so there top-p and min-p see the untempered
distribution. The two orders agree whenever temperature == 1 (and for top-k at any temperature,
since dividing by a positive temperature keeps the ranking); we follow transformers.

Every filter replaces removed logits with -inf and never removes every token. All arithmetic is
float64, and logits are shifted so that the largest is 0 before anything is exponentiated or
divided by the temperature, so huge logits (1e30), -inf entries and extreme temperatures give no
NaNs. +inf logits are read as "infinitely more likely than any finite logit": the distribution is
uniform over them.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

_FLOAT64_MAX = np.finfo(np.float64).max


# Parameters

def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. The defaults give greedy decoding.

    temperature         0 = greedy (argmax); otherwise logits are divided by it.   >= 0, finite
    top_k               keep the k most likely tokens.             None or 0 = off; int >= 0
    top_p               keep the smallest set of most likely tokens whose probability mass
                        reaches top_p.                            None or 1.0 = off; (0, 1]
    min_p               keep tokens with p >= min_p * p_max.        None or 0 = off; [0, 1]
    repetition_penalty  for each token id already in the context: logit / r if logit > 0,
                        else logit * r (CTRL, as in transformers and llama.cpp). 1.0 = off; > 0
    seed                seed of the np.random.Generator; None = fresh OS entropy. None or int >= 0
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        t = self.temperature
        if not (_is_number(t) and math.isfinite(t) and t >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {t!r}")
        k = self.top_k
        if not (k is None or (_is_int(k) and k >= 0)):
            raise ValueError(f"top_k must be None or an integer >= 0 (None or 0 turns it off), got {k!r}")
        p = self.top_p
        if not (p is None or (_is_number(p) and 0 < p <= 1)):
            raise ValueError(f"top_p must be None or a number in (0, 1] (None or 1.0 turns it off), got {p!r}")
        m = self.min_p
        if not (m is None or (_is_number(m) and 0 <= m <= 1)):
            raise ValueError(f"min_p must be None or a number in [0, 1] (None or 0 turns it off), got {m!r}")
        r = self.repetition_penalty
        if not (_is_number(r) and math.isfinite(r) and r > 0):
            raise ValueError(
                f"repetition_penalty must be a finite number > 0 (1.0 turns it off), got {r!r}")
        s = self.seed
        if not (s is None or (_is_int(s) and s >= 0)):
            raise ValueError(f"seed must be None or an integer >= 0, got {s!r}")

    @property
    def greedy(self):
        return self.temperature == 0


# Small helpers

def _as_logits(logits):
    """Validate a [V] logits vector and return it as a new float64 array."""
    x = np.array(logits, dtype=np.float64)  # always a copy
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"logits must be a non-empty 1-D array [V], got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("logits must not contain NaN")
    if not (x > -np.inf).any():
        raise ValueError("logits must contain at least one entry above -inf")
    return x


def _shift_max_to_zero(x):
    """x - max(x), so the largest logit is exactly 0 (softmax does not change).

    If some logits are +inf, they become 0 and every other logit -inf: the limit of the
    distribution as those logits grow.
    """
    top = x.max()
    if top == np.inf:
        return np.where(x == np.inf, 0.0, -np.inf)
    with np.errstate(over="ignore"):  # 1e308 - (-1e308) overflows to -inf: correct limit
        return x - top


def softmax(logits):
    """[V] logits -> [V] float64 probabilities; exp(-inf) = 0. NaN-free for any valid logits."""
    e = np.exp(_shift_max_to_zero(_as_logits(logits)))
    return e / e.sum()  # the sum is >= 1: the top logit contributes exp(0)


def _keep_only(logits, keep):
    """logits where `keep` (a bool mask or index array), -inf elsewhere."""
    out = np.full_like(logits, -np.inf)
    out[keep] = logits[keep]
    return out


def _context_ids(previous_ids, vocab_size):
    """Unique token ids of the context, checked to lie in [0, V)."""
    ids = np.unique(np.asarray(previous_ids, dtype=np.int64).reshape(-1))
    if ids.size and (ids[0] < 0 or ids[-1] >= vocab_size):
        bad = ids[0] if ids[0] < 0 else ids[-1]
        raise ValueError(f"previous_ids must be token ids in [0, {vocab_size}), got {bad}")
    return ids


# The pieces, in the order they are applied

def apply_repetition_penalty(logits, previous_ids, penalty):
    """CTRL repetition penalty (Keskar et al. 2019), as in transformers and llama.cpp.

    For every distinct token id in `previous_ids`: logit / penalty if logit > 0, else
    logit * penalty. So penalty > 1 lowers each repeated logit (a logit of 0 stays 0),
    penalty < 1 raises it, and 1.0 is the identity. Other tokens are untouched; a token counts
    once however often it occurs. A finite logit stays finite (clipped to the float64 range), so
    an extreme penalty cannot remove a token. Returns a new float64 [V] array.
    """
    out = _as_logits(logits)
    ids = _context_ids(previous_ids, out.size)
    if penalty == 1.0 or ids.size == 0:
        return out
    seen = out[ids]
    with np.errstate(over="ignore"):
        penalised = np.where(seen > 0, seen / penalty, seen * penalty)
    out[ids] = np.where(np.isfinite(seen), np.clip(penalised, -_FLOAT64_MAX, _FLOAT64_MAX), seen)
    return out


def apply_temperature(logits, temperature):
    """(logits - max) / temperature, for temperature > 0.

    Softmax is shift-invariant, so subtracting the max changes no probability; it keeps the top
    logit at exactly 0 (finite) even when 1 / temperature overflows. Returns float64 [V].
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 here (0 means greedy), got {temperature!r}")
    with np.errstate(over="ignore"):  # very small temperatures push logits to -inf: fine
        return _shift_max_to_zero(_as_logits(logits)) / temperature


def top_k_filter(logits, top_k):
    """Keep the top_k largest logits, set the rest to -inf.

    Exactly min(top_k, V) entries are kept; ties at the boundary go to the lowest token ids
    (the same rule as greedy argmax, so top_k = 1 is greedy). None or 0 keeps everything, as
    does top_k >= V. Selection is O(V) with np.argpartition, no full sort.
    """
    x = _as_logits(logits)
    if not top_k or top_k >= x.size:
        return x
    # the k-th largest value: everything above it is in, ties with it fill the remaining slots
    kth_largest = x[np.argpartition(x, x.size - top_k)[x.size - top_k]]
    keep = x > kth_largest
    n_ties = top_k - int(keep.sum())
    keep[np.flatnonzero(x == kth_largest)[:n_ties]] = True
    return _keep_only(x, keep)


def top_p_filter(logits, top_p):
    """Nucleus filter (Holtzman et al. 2019): keep the smallest set of most likely tokens whose
    probability mass is >= top_p, set the rest to -inf.

    Tokens are ranked by logit, descending (ties: lowest id first), the softmax probabilities
    are accumulated in that order, and the shortest prefix whose cumulative sum reaches top_p is
    kept. The top token is always kept; if rounding keeps the total just below top_p, every
    candidate is kept. None or 1.0 keeps everything. Only tokens still above -inf are sorted, so
    after top-k the sort is over k entries.
    """
    x = _as_logits(logits)
    if top_p is None or top_p >= 1.0:
        return x
    probs = softmax(x)
    candidates = np.flatnonzero(x > -np.inf)
    ranked = candidates[np.argsort(-x[candidates], kind="stable")]
    cumulative = np.cumsum(probs[ranked])
    first_reaching = int(np.searchsorted(cumulative, top_p, side="left"))  # first cum >= top_p
    n_keep = min(first_reaching + 1, ranked.size)
    return _keep_only(x, ranked[:n_keep])


def min_p_filter(logits, min_p):
    """Min-p filter (Nguyen et al. 2024): keep tokens with p >= min_p * p_max, set the rest to -inf.

    p is the softmax of `logits`; the most likely token always passes (min_p <= 1). None or 0
    keeps everything.
    """
    x = _as_logits(logits)
    if not min_p:
        return x
    probs = softmax(x)
    return _keep_only(x, probs >= min_p * probs.max())


# The whole chain

def process_logits(logits, params, previous_ids = ()):
    """Apply the whole chain and return float64 [V] logits with -inf on every removed token.

    Greedy (temperature 0) keeps only the argmax (lowest id on ties) of the penalised logits.
    """
    x = apply_repetition_penalty(logits, previous_ids, params.repetition_penalty)
    if params.greedy:
        return _keep_only(np.zeros_like(x), [int(np.argmax(x))])
    x = apply_temperature(x, params.temperature)
    x = top_k_filter(x, params.top_k)
    x = top_p_filter(x, params.top_p)
    x = min_p_filter(x, params.min_p)
    return x


def probabilities(logits, params, previous_ids = ()):
    """The distribution the sampler draws from: float64 [V], summing to 1, 0 on removed tokens.

    Greedy (temperature 0) gives a one-hot vector on the argmax.
    """
    return softmax(process_logits(logits, params, previous_ids))


class Sampler:
    """Draws next tokens with `params`; the same seed gives the same sequence of draws.

        sampler = Sampler(SamplingParams(temperature=0.8, top_p=0.95, seed=0))
        next_id = sampler(logits, previous_ids)   # logits: [V] for the next position
    """

    def __init__(self, params):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits, previous_ids = ()):
        if self.params.greedy:
            penalised = apply_repetition_penalty(logits, previous_ids, self.params.repetition_penalty)
            return int(np.argmax(penalised))
        probs = probabilities(logits, self.params, previous_ids)
        return int(self.rng.choice(probs.size, p=probs))
