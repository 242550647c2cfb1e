"""The training loop: `train(run_dir, network, windows, settings)`
(docs/training.md#training-a-student).

A step:

    ids [B, T] (windows of the data, BOS first) -> loss_and_grad -> clip_by_global_norm
    -> AdamW at warmup_cosine(step)

on next-token targets, or on the teacher's sparse targets of the same windows (objective
"distill"). The run folder holds curve.csv (one row per step: tokens seen, learning rate,
training loss, gradient norm, held-out next-token loss when evaluated, seconds), checkpoints
(`minigemma.training.checkpoint`; a run started again on the same folder resumes from the newest
one, and reaches the weights the uninterrupted run would have), summary.json and, when asked,
a plot. The commands that drive it are `minigemma.training.commands`.
"""
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

from tqdm import tqdm

from minigemma.training import checkpoint
from minigemma.training.backward import forward_trunk
from minigemma.training.objective import NextToken, network_loss_and_grad
from minigemma.training.optimizer import AdamW, clip_by_global_norm, warmup_cosine

CURVE_FILE, PLOT_FILE, SUMMARY_FILE = "curve.csv", "curve.png", "summary.json"
CURVE_FIELDS = ("step", "tokens", "lr", "loss", "grad_norm", "held_out_loss", "seconds")
OBJECTIVES = ("next-token", "distill")


# evaluation

def evaluate(network, tokens, batch_size=8):
    """Mean next-token cross-entropy (nats per token) of `network` over windows tokens [N, T]:
    the head in blocks, no gradient kept. exp() of it is the perplexity."""
    be = network.backend
    total, count = 0.0, 0
    for start in range(0, len(tokens), batch_size):
        ids = be.asarray(tokens[start:start + batch_size])
        h, _ = forward_trunk(network, ids, trainable=False)
        targets = NextToken(ids, be.xp)
        loss, n = head_loss(network, h, targets)
        total += loss
        count += n
    return total / count


def head_loss(network, h, targets, rows_per_block=256):
    """(Σ of the loss over the rows of `targets`, number of rows), without gradients."""
    be, c, p = network.backend, network.config, network.params
    normed = be.rms_norm(h[:, targets.positions], p["final_norm"], c.rms_eps)
    rows = normed.reshape(-1, normed.shape[-1])
    total = 0.0
    for start in range(0, rows.shape[0], rows_per_block):
        block = slice(start, min(start + rows_per_block, rows.shape[0]))
        logits = be.linear(rows[block], p["embedding"])
        if c.final_softcap is not None:
            logits = be.softcap(logits, c.final_softcap)
        loss, _ = targets.block_loss_and_grad(be, logits, block, 1)
        total += loss
    return total, rows.shape[0]


# the run

@dataclass
class TrainSettings:
    """What a run does, apart from the student's shape (saved in every checkpoint)."""
    objective: str = "next-token"  # or "distill"
    steps: int = 60
    batch_size: int = 8
    peak_lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 6
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    seed: int = 0
    eval_every: int = 10
    eval_windows: int = 16  # held-out windows per evaluation during the run (all at the end)
    checkpoint_every: int = 20

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "eval_windows"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must lie in [0, steps = {self.steps}]")


def train(run_dir, network, data, settings, held_out=None, tokenizer_bytes=None, progress=True):
    """Train `network` in place on `data` (Windows) for settings.steps updates, resuming from
    the newest checkpoint in run_dir if there is one. held_out: windows [N, T] of text the
    run does not train on, evaluated every settings.eval_every steps. Returns the summary."""
    be = network.backend
    if settings.objective == "distill" and data.teacher_ids is None:
        raise ValueError("distillation needs the teacher's targets: give --targets FILE.npz")
    if data.context > network.config.max_position:
        raise ValueError(f"windows of {data.context} tokens exceed the student's context of "
                         f"{network.config.max_position}")
    os.makedirs(run_dir, exist_ok=True)
    optimizer, start = AdamW(weight_decay=settings.weight_decay), 0
    found = checkpoint.latest_checkpoint(run_dir)
    if found is not None:
        start, optimizer = _resume(found, network, settings)
    _truncate_curve(run_dir, start)
    warm_up(be)
    clock, tokens_per_step = time.perf_counter(), settings.batch_size * data.context
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps,
               desc=settings.objective, unit="step", disable=not progress)
    for step in bar:
        rows = data.batch(step, settings.batch_size, settings.seed)
        ids = be.asarray(data.tokens[rows])
        teacher = data.teacher(rows) if settings.objective == "distill" else None
        loss, grads = network_loss_and_grad(network, ids, teacher, data.temperature)
        norm = clip_by_global_norm(grads, settings.clip_norm, be.xp)
        lr = warmup_cosine(step, settings.peak_lr, settings.warmup_steps, settings.steps,
                           settings.min_lr)
        optimizer.update(be, network.params, grads, lr)
        done = step + 1
        held_out_loss = ""
        if held_out is not None and (done % settings.eval_every == 0 or done == settings.steps):
            windows = held_out if done == settings.steps else held_out[:settings.eval_windows]
            held_out_loss = evaluate(network, windows, settings.batch_size)
        _append_curve(run_dir, [done, done * tokens_per_step, lr, loss, norm, held_out_loss,
                                time.perf_counter() - clock])
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}",
                        tok_s=f"{(done - start) * tokens_per_step / (time.perf_counter() - clock):.0f}")
        if done % settings.checkpoint_every == 0 or done == settings.steps:
            checkpoint.save(run_dir, done, network, optimizer, dataclasses.asdict(settings),
                            tokenizer_bytes)
    bar.close()
    summary = summarise(run_dir, settings, network)
    with open(os.path.join(run_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _resume(folder, network, settings):
    state = checkpoint.read_state(folder)
    saved = state["settings"]
    for key in ("objective", "batch_size", "seed", "steps", "peak_lr", "warmup_steps"):
        if saved.get(key) != getattr(settings, key):
            raise ValueError(f"{folder} was trained with {key} = {saved.get(key)!r}, this run "
                             f"asks for {getattr(settings, key)!r}: resume with the same "
                             f"settings, or train into another folder")
    model, optimizer, state = checkpoint.load(folder, backend=network.backend)
    if model.config != network.config:
        raise ValueError(f"{folder} holds a student of another shape: train into another folder")
    for name, w in model.network.params.items():
        network.params[name][...] = w
    return state["step"], optimizer


def warm_up(be):
    """Compile (or load) the backend's kernels and training's before the first timed step."""
    if hasattr(be, "warmup"):
        be.warmup()
    if getattr(be, "name", None) == "numba":
        from minigemma.backends.numba import backward
        backward.warm_up()


def _truncate_curve(run_dir, step):
    """Keep curve.csv's rows up to `step` (a resumed run rewrites what came after)."""
    rows = read_curve(run_dir)
    with open(os.path.join(run_dir, CURVE_FILE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_FIELDS)
        writer.writerows([r[k] for k in CURVE_FIELDS] for r in rows if int(r["step"]) <= step)


def _append_curve(run_dir, row):
    with open(os.path.join(run_dir, CURVE_FILE), "a", newline="") as f:
        csv.writer(f).writerow(row)


def read_curve(run_dir):
    """curve.csv as a list of dicts (strings), [] when there is none."""
    path = os.path.join(run_dir, CURVE_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def summarise(run_dir, settings, network):
    rows = read_curve(run_dir)
    evaluated = [r for r in rows if r["held_out_loss"]]
    last = evaluated[-1] if evaluated else None
    return {"objective": settings.objective, "steps": len(rows),
            "tokens": int(rows[-1]["tokens"]) if rows else 0,
            "seconds": float(rows[-1]["seconds"]) if rows else 0.0,
            "final_train_loss": float(rows[-1]["loss"]) if rows else None,
            "held_out_loss": float(last["held_out_loss"]) if last else None,
            "held_out_perplexity": math.exp(float(last["held_out_loss"])) if last else None,
            "student": network.config.to_dict(), "settings": dataclasses.asdict(settings)}


def plot(runs, out, title=None):
    """Plot the training loss and held-out perplexity of runs {label: run folder} into `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, folder in runs.items():
        rows = read_curve(folder)
        tokens = [int(r["tokens"]) for r in rows]
        left.plot(tokens, [float(r["loss"]) for r in rows], label=label)
        held = [(int(r["tokens"]), math.exp(float(r["held_out_loss"])))
                for r in rows if r["held_out_loss"]]
        if held:
            right.plot(*zip(*held), marker="o", label=label)
    left.set(xlabel="training tokens", ylabel="training loss (nats / token)",
             title="training loss, each run's own objective")
    right.set(xlabel="training tokens", ylabel="held-out perplexity", yscale="log",
              title="next-token perplexity on held-out text")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
