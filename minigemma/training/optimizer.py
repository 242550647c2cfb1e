"""AdamW with decoupled weight decay, clipping by global norm, and a warmup + cosine schedule
(Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"; Kingma & Ba 2015;
docs/training.md#optimizer).

For each parameter θ with gradient g, at step t = 1, 2, …:

    m_t = β₁ m_{t−1} + (1 − β₁) g                 v_t = β₂ v_{t−1} + (1 − β₂) g²
    m̂ = m_t / (1 − β₁ᵗ)                           v̂ = v_t / (1 − β₂ᵗ)
    θ ← θ − η_t (m̂ / (√v̂ + ε) + λ θ)              λ only on matrices (decay_mask)

The decay is decoupled: it shrinks θ itself rather than being added to g, so Adam's scaling
never touches it (PyTorch's torch.optim.AdamW: θ ← θ (1 − η λ)). Norm gains, biases and the
RG-LRU's parameter are not decayed: a norm stores g = 1 + w, and pulling g to 0 would pull the
gain, not w, to 0.

    clip_by_global_norm:  g ← g · min(1, c / ‖g‖),   ‖g‖ = √(Σ over every parameter of Σ g²)
    warmup_cosine(t):     η_max · (t + 1) / warmup                           t < warmup (0-based t)
                          η_min + ½ (η_max − η_min)(1 + cos(π (t − warmup) / (total − warmup)))

Moments are float32, as the parameters; the state is a plain value (`state_arrays`) that
training checkpoints save.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from minigemma.training import kernels


def adamw_update_reference(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, step,
                           xp=np):
    """One AdamW step on one parameter, in place: m, v, then θ (see the module docstring)."""
    m *= xp.float32(beta1)
    m += xp.float32(1 - beta1) * grad
    v *= xp.float32(beta2)
    v += xp.float32(1 - beta2) * (grad * grad)
    m_hat_scale = 1.0 / (1 - beta1 ** step)
    v_hat_scale = 1.0 / (1 - beta2 ** step)
    update = (m * xp.float32(m_hat_scale)) / (xp.sqrt(v * xp.float32(v_hat_scale))
                                              + xp.float32(eps))
    if weight_decay:
        update += xp.float32(weight_decay) * param
    param -= xp.float32(lr) * update


def decay_mask(name, shape):
    """Whether AdamW decays a parameter: the matrices (2-D and up), not norms, biases or vectors."""
    return len(shape) >= 2


@dataclass
class AdamW:
    """AdamW over a dict of parameters, updated in place; `step` counts updates done."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    step: int = 0
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, value, low, high in (("beta1", self.beta1, 0, 1), ("beta2", self.beta2, 0, 1)):
            if not low <= value < high:
                raise ValueError(f"AdamW {name} must lie in [0, 1), got {value!r}")
        if not self.eps > 0 or not self.weight_decay >= 0:
            raise ValueError(f"AdamW needs eps > 0 and weight_decay >= 0, got eps {self.eps!r}, "
                             f"weight_decay {self.weight_decay!r}")

    def update(self, be, params, grads, lr):
        """One step: every parameter in `params` moves by its gradient in `grads`, in place."""
        missing = sorted(set(params) - set(grads))
        if missing:
            raise ValueError(f"no gradient for the parameters {missing}")
        xp = be.xp
        self.step += 1
        for name, param in params.items():
            if name not in self.m:
                self.m[name] = xp.zeros(param.shape, dtype=xp.float32)
                self.v[name] = xp.zeros(param.shape, dtype=xp.float32)
            decay = self.weight_decay if decay_mask(name, param.shape) else 0.0
            kernels.adamw_update(be, param, grads[name], self.m[name], self.v[name], lr=lr,
                                 beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                                 weight_decay=decay, step=self.step)

    def state_arrays(self):
        """{"m.<name>": m, "v.<name>": v}: the moments, for a checkpoint."""
        return {**{f"m.{k}": a for k, a in self.m.items()}, **{f"v.{k}": a for k, a in self.v.items()}}

    def hyperparameters(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "step": self.step}

    @classmethod
    def from_state(cls, hyperparameters, arrays, be):
        """The optimizer `hyperparameters()` and `state_arrays()` describe, on backend `be`."""
        opt = cls(**hyperparameters)
        for key, a in arrays.items():
            kind, name = key.split(".", 1)
            getattr(opt, kind)[name] = be.asarray(np.ascontiguousarray(a, dtype=np.float32))
        return opt


def global_norm(grads, xp=np):
    """‖g‖ over every array of `grads`, accumulated in float64."""
    return math.sqrt(sum(float(xp.sum(g.astype(xp.float64) ** 2)) for g in grads.values()))


def clip_by_global_norm(grads, max_norm, xp=np):
    """Scale every gradient by min(1, max_norm / ‖g‖), in place -> ‖g‖ before clipping."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
    norm = global_norm(grads, xp)
    if norm > max_norm:
        factor = xp.float32(max_norm / norm)
        for g in grads.values():
            g *= factor
    return norm


def warmup_cosine(step, peak_lr, warmup_steps, total_steps, min_lr=0.0):
    """The learning rate of update `step` (0-based): linear warmup to peak_lr over warmup_steps
    (the first update already moves, at peak_lr / warmup_steps), then a half cosine down to
    min_lr at total_steps; min_lr after that."""
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must lie in [0, total_steps = {total_steps}], got "
                         f"{warmup_steps}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * progress))
