"""Training objectives, the backward pass of both networks, and training a student.

    losses       next-token cross-entropy and distillation losses with analytic gradients
    distill      capturing a teacher's sparse targets and scoring a student on them
    blocks_backward  the shared blocks' backward: dense layers, norms, attention, gated MLP
    backward     the networks' backward pass, layer by layer (each op's is beside its forward)
    objective    loss_and_grad: the head by blocks of rows, next-token or teacher targets
    kernels      which backend computes the costly backward parts (Numba kernels or NumPy)
    optimizer    AdamW, clipping by global norm, warmup + cosine
    checkpoint   atomic training checkpoints in minigemma's format, and resuming
    corpus       the standard library's docstrings: training and held-out text
    student      the Gemma 3-architecture student and its token windows
    train        the training loop, its evaluation and loss curve
    commands     `minigemma train`, `minigemma distill train`, `minigemma bench --train`
    experiment   distillation against next-token prediction, one command
"""
