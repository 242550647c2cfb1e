"""Finite differences in float64 for the backward passes.

The ops compute in float32 by design, casting through `xp.float32`. `FLOAT64` is an array
module whose `float32` is float64: the very same op code, passed `xp=FLOAT64`, then runs in
float64, so its central differences are accurate to ~1e-10 and a backward function (also given
`xp=FLOAT64`) can be checked against them tightly.
"""
import numpy as np


class _Float64Numpy:
    """numpy, except that float32 means float64."""
    float32 = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


FLOAT64 = _Float64Numpy()
STEP = 1e-6  # central differences in float64: truncation ~STEP², rounding ~1e-16 / STEP


def directional_derivative(f, inputs, directions, step=STEP):
    """((f(x + h·d) − f(x − h·d)) / 2h, its rounding error) for a scalar f of the arrays
    `inputs` along `directions`. The rounding error bounds what float64 loses in f's values
    (64 ulps of the larger), divided by 2h."""
    plus = f(*[x + step * d for x, d in zip(inputs, directions)])
    minus = f(*[x - step * d for x, d in zip(inputs, directions)])
    rounding = 64 * np.finfo(np.float64).eps * max(abs(plus), abs(minus)) / (2 * step)
    return (plus - minus) / (2 * step), rounding


def check_gradients(f, inputs, grads, rng, tol=1e-6, step=STEP):
    """Assert <grads, d> equals f's directional derivative along random d, to `tol` relative.

    f: scalar function of the float64 arrays `inputs`; grads: the backward's gradients, one per
    input (None to leave an input out). Three random directions; the relative error is taken
    against max(|FD|, the sum of the directional terms' sizes) so that a gradient that happens
    to be orthogonal to a direction is not judged on round-off, plus the differences' own
    rounding error.
    """
    for _ in range(3):
        directions = [rng.standard_normal(np.shape(x)) if g is not None else np.zeros(np.shape(x))
                      for x, g in zip(inputs, grads)]
        fd, rounding = directional_derivative(f, inputs, directions, step)
        terms = [float(np.sum(g * d)) for g, d in zip(grads, directions) if g is not None]
        analytic = sum(terms)
        size = max(abs(fd), sum(abs(t) for t in terms), 1e-12)
        assert abs(analytic - fd) <= tol * size + rounding, (
            f"gradient {analytic:.10g} vs finite differences {fd:.10g} "
            f"(relative error {abs(analytic - fd) / size:.3g} > {tol:g})")


def per_input_check(f, inputs, grads, rng, tol=1e-6, step=STEP):
    """check_gradients one input at a time, naming the input that fails."""
    for i, g in enumerate(grads):
        if g is None:
            continue
        only = [gi if j == i else None for j, gi in enumerate(grads)]
        try:
            check_gradients(f, inputs, only, rng, tol, step)
        except AssertionError as e:
            raise AssertionError(f"input {i}: {e}") from None
