"""Random weights for any network shape: for studying a model's shape without a checkpoint
(notebooks, benchmarks of unreleased sizes, tests).

    matrices, biases   ~ N(0, std²)
    norm gains g       = 1 + N(0, norm_std²)          (the stored 1 + w)
    RG-LRU a_param     such that a = σ(−θ) has a² uniform in [0.9², 0.999²]
                       (the Griffin paper's initialisation of the decay on a ring)
"""
import numpy as np


def random_params(shapes, seed=0, std=0.2, norm_std=0.5):
    """{name: shape} -> {name: float32 array}, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in shapes.items():
        if name.endswith("_norm"):
            params[name] = 1.0 + norm_std * rng.standard_normal(shape)
        elif name.endswith("a_param"):
            a = np.sqrt(rng.uniform(0.9 ** 2, 0.999 ** 2, size=shape))
            params[name] = np.log(np.expm1(-np.log(a)))  # softplus(θ) = −log a
        else:
            params[name] = std * rng.standard_normal(shape)
        params[name] = params[name].astype(np.float32)
    return params
