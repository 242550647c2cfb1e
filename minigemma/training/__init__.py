"""Training objectives.

    losses   next-token cross-entropy and distillation losses with analytic gradients
    distill  capturing a teacher's sparse targets and scoring a student on them
"""
