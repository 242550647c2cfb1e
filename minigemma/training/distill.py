"""Distillation targets: capture a teacher's sparse next-token distributions, score students on them.

Gemma 2's 2B and 9B learn from a larger teacher's distributions instead of the next token
(docs/distillation.md#gemma-2), and its post-training distils on sequences sampled from the
student itself: on-policy distillation (docs/distillation.md#on-policy-distillation). Gemini Nano
is distilled from larger Gemini models (docs/distillation.md#gemini-nano). Dense targets would
take V floats per token (1 MiB for Gemma's 262 144 ids), so we keep k sampled ids per position
(losses.sample_teacher, as in Gemma 3: docs/distillation.md#sparse-targets):

    capture  teacher logits over text windows, or over sampled continuations of prompts
             -> sample_teacher -> DistillTargets -> .npz
    score    student logits over the same tokens -> sparse_distillation_loss, per token

    minigemma distill capture --text FILE [--context N] [--model DIR] [--k K --seed S
                              --temperature T] --out FILE.npz
    minigemma distill capture --on-policy --prompts FILE [--max-new-tokens N] [--policy DIR] ...
    minigemma distill score --student DIR --targets FILE.npz
    minigemma distill train --targets FILE.npz --out RUN [...]   (minigemma.training.commands)

The targets file (np.savez; no pickles, loaded with allow_pickle=False):

    tokens        int32 [N]       every sequence's token ids, concatenated (BOS first in each)
    offsets       int64 [S + 1]   sequence s is tokens[offsets[s]:offsets[s + 1]]
    first_target  int64 [S]       first position of sequence s that carries a target
    ids, probs    [R, k]          the SparseTeacher rows, sequence after sequence, one per position
                                  first_target[s] .. len_s − 1
    meta          JSON string     model, k, temperature, seed, weighting, mode, vocab_size, ...

Row t of a sequence's targets is the teacher's distribution of the token after position t. Text
windows carry a target at every position (first_target = 0). On-policy sequences carry one from
the last prompt position on (first_target = prompt length − 1): on every sampled token, plus the
position after the last one, where the teacher says whether to stop.
"""
import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from minigemma.training import kernels
from minigemma.training.losses import WEIGHTINGS, SparseTeacher, sparse_distillation_loss

FILE_FORMAT = "minigemma-distill-targets"
FILE_VERSION = 1


@dataclass
class DistillTargets:
    """Token sequences and the teacher's sparse targets on them (see the module docstring)."""
    tokens: np.ndarray  # [N] int32
    offsets: np.ndarray  # [S + 1] int64
    first_target: np.ndarray  # [S] int64
    teacher: SparseTeacher  # [R, k]
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        lengths = np.diff(self.offsets)
        if (len(self.offsets) < 2 or self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens) or (lengths < 1).any()
                or len(self.first_target) != len(lengths) or (self.first_target < 0).any()
                or (self.first_target >= lengths).any()):
            raise ValueError("inconsistent distillation targets: offsets must run from 0 to the "
                             "number of tokens with non-empty sequences, and each first_target "
                             "must lie inside its sequence")
        if int((lengths - self.first_target).sum()) != len(self.teacher):
            raise ValueError(f"the sequences need {int((lengths - self.first_target).sum())} "
                             f"target rows, the sparse teacher has {len(self.teacher)}")

    def __len__(self):
        return len(self.first_target)

    @property
    def num_targets(self):
        return len(self.teacher)

    def sequences(self):
        """Yield (token ids [L], first_target, SparseTeacher [L − first_target, k]) per sequence."""
        row = 0
        for s in range(len(self)):
            ids = self.tokens[self.offsets[s]:self.offsets[s + 1]]
            first = int(self.first_target[s])
            yield ids, first, self.teacher.rows(row, row + len(ids) - first)
            row += len(ids) - first

    @classmethod
    def from_sequences(cls, sequences, vocab_size, meta):
        """[(token ids, first_target, SparseTeacher), ...] -> DistillTargets."""
        if not sequences:
            raise ValueError("no sequences to build distillation targets from")
        lengths = [len(ids) for ids, _, _ in sequences]
        k = max(sparse.ids.shape[1] for _, _, sparse in sequences)
        ids = np.concatenate([_pad(sparse.ids, k) for _, _, sparse in sequences])
        probs = np.concatenate([_pad(sparse.probs, k) for _, _, sparse in sequences])
        return cls(tokens=np.concatenate([np.asarray(s, np.int32) for s, _, _ in sequences]),
                   offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                   first_target=np.array([f for _, f, _ in sequences], dtype=np.int64),
                   teacher=SparseTeacher(ids, probs, int(vocab_size)), meta=dict(meta))

    def save(self, path):
        """Write an .npz at `path` (under a temporary name, renamed when complete)."""
        path = os.fspath(path)
        meta = {"format": FILE_FORMAT, "format_version": FILE_VERSION, **self.meta,
                "vocab_size": self.teacher.vocab_size}
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".distill-partial-", suffix=".npz", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, tokens=self.tokens, offsets=self.offsets,
                         first_target=self.first_target, ids=self.teacher.ids,
                         probs=self.teacher.probs, meta=np.array(json.dumps(meta)))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return path

    @classmethod
    def load(cls, path):
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {name: f[name] for name in f.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable .npz of distillation targets ({e})") from None
        missing = {"tokens", "offsets", "first_target", "ids", "probs", "meta"} - set(arrays)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)} of distillation targets")
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FILE_FORMAT or meta.get("format_version") != FILE_VERSION:
            raise ValueError(f"{path} is not a {FILE_FORMAT} file of version {FILE_VERSION}")
        try:
            return cls(arrays["tokens"], arrays["offsets"], arrays["first_target"],
                       SparseTeacher(arrays["ids"], arrays["probs"], int(meta["vocab_size"])), meta)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _pad(a, k):
    """[R, j] -> [R, k] with zeros on the right (id 0 with weight 0: padding)."""
    return np.pad(a, ((0, 0), (0, k - a.shape[1])))


def _require_tokenizer(model, what):
    if model.tokenizer is None:
        raise ValueError(f"{model.path}: {what} needs a tokenizer, and this checkpoint has no "
                         f"tokenizer.model")
    return model.tokenizer


def _capture_meta(model, mode, k, seed, temperature, weighting, **extra):
    return {"model": str(model.path), "mode": mode, "k": int(k), "temperature": float(temperature),
            "seed": int(seed), "weighting": weighting, **extra}


def text_windows(tokenizer, text, context):
    """The token windows capture_text runs: BOS + context − 1 tokens of the text each."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise ValueError(f"context must be an integer >= 2 (BOS plus at least one token), "
                         f"got {context!r}")
    body = tokenizer.encode(text, add_bos=False)
    if not body:
        raise ValueError("the text is empty: give some text to run the teacher on")
    step = context - 1
    return [[tokenizer.bos_id] + body[i:i + step] for i in range(0, len(body), step)]


def capture_text(model, text, context, k, seed, temperature=1.0, weighting="frequency",
                 progress=True):
    """Teacher targets over `text`, split into windows of `context` tokens (each BOS first).

    Window w's targets are sample_teacher(model.logits(window), k, seed=(seed, w), temperature),
    drawn by the model's backend (`minigemma.training.kernels.sample_teacher`).
    Returns DistillTargets; every position of every window carries a target.
    """
    windows = text_windows(_require_tokenizer(model, "capturing targets over text"), text, context)
    if context > model.config.max_position:
        raise ValueError(f"context {context} is longer than the model's context of "
                         f"{model.config.max_position} tokens")
    sequences = []
    for w, ids in enumerate(tqdm(windows, desc="teacher", unit="window", disable=not progress)):
        sparse = kernels.sample_teacher(model.backend, model.logits(ids), k, (seed, w),
                                        temperature, weighting)
        sequences.append((ids, 0, sparse))
    meta = _capture_meta(model, "text", k, seed, temperature, weighting, context=context)
    return DistillTargets.from_sequences(sequences, model.config.vocab_size, meta)


def capture_on_policy(model, prompts, max_new_tokens, k, seed, temperature=1.0,
                      weighting="frequency", policy=None, sample_temperature=1.0, progress=True):
    """Teacher targets on continuations that `policy` samples from each prompt (on-policy,
    docs/distillation.md#on-policy-distillation).

    On-policy distillation (Agarwal et al. 2024, GKD) samples from the student and trains it
    towards the teacher's distributions on those samples: pass the student as `policy`. By
    default the teacher samples its own continuations. Prompt i is continued with
    SamplingParams(sample_temperature, seed derived from (seed, i)); its targets are drawn with
    seed (seed, i) from the teacher's logits at the last prompt position and after.
    """
    from minigemma.text.generation import GenerationStats, default_stop_ids, generate_ids
    from minigemma.text.sampling import Sampler, SamplingParams
    policy = model if policy is None else policy
    tokenizer = _require_tokenizer(policy, "sampling continuations of prompts")
    if policy.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"the policy's vocabulary ({policy.config.vocab_size} ids) differs from the "
                         f"teacher's ({model.config.vocab_size}); they must share a tokenizer")
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise ValueError("no prompts: give at least one non-empty prompt")
    sequences = []
    for i, prompt in enumerate(tqdm(prompts, desc="on-policy", unit="prompt",
                                    disable=not progress)):
        prompt_ids = tokenizer.encode(prompt)
        sample_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        sampler = Sampler(SamplingParams(temperature=sample_temperature, seed=sample_seed))
        new_ids = list(generate_ids(policy, prompt_ids, max_new_tokens, sampler,
                                    default_stop_ids(tokenizer), GenerationStats()))
        ids = prompt_ids + new_ids
        if len(ids) > model.config.max_position:
            raise ValueError(f"prompt {i} and its continuation have {len(ids)} tokens; the "
                             f"teacher's context is {model.config.max_position}")
        first = len(prompt_ids) - 1
        logits = model.logits(ids)[first:]  # [L − first, V]
        sequences.append((ids, first, kernels.sample_teacher(model.backend, logits, k, (seed, i),
                                                             temperature, weighting)))
    meta = _capture_meta(model, "on-policy", k, seed, temperature, weighting,
                         policy=str(policy.path), max_new_tokens=max_new_tokens,
                         sample_temperature=sample_temperature)
    return DistillTargets.from_sequences(sequences, model.config.vocab_size, meta)


@dataclass(frozen=True)
class DistillScore:
    mean_loss: float  # nats per target token: the sparse estimate of H(P_T, P_S)
    tokens: int  # target positions scored
    sparse_bytes: int  # the sparse targets' ids and probs
    dense_bytes: int  # what dense [tokens, V] float32 targets would take
    temperature: float

    def summary(self):
        return (f"distillation loss {self.mean_loss:.4f} nats/token over {self.tokens} tokens "
                f"(temperature {self.temperature:g})\n"
                f"targets: sparse {self.sparse_bytes / 2**20:.3f} MiB vs dense [T, V] float32 "
                f"{self.dense_bytes / 2**20:.1f} MiB ({self.dense_bytes / self.sparse_bytes:.0f}x)")


def score(student, targets, progress=True):
    """Mean sparse distillation loss of `student` on `targets` (at the capture's temperature)."""
    V = targets.teacher.vocab_size
    if student.config.vocab_size != V:
        raise ValueError(f"the student's vocabulary has {student.config.vocab_size} ids, the targets' "
                         f"{V}: distillation needs the teacher's tokenizer")
    temperature = float(targets.meta.get("temperature", 1.0))
    total = 0.0
    for ids, first, sparse in tqdm(targets.sequences(), total=len(targets), desc="student",
                                   unit="seq", disable=not progress):
        logits = student.logits(ids)[first:]  # [rows, V]
        total += sparse_distillation_loss(logits, sparse, temperature) * len(sparse)
    return DistillScore(total / targets.num_targets, targets.num_targets, targets.teacher.nbytes,
                        targets.teacher.dense_nbytes, temperature)


# Command line: minigemma distill capture|score (and train, from minigemma.training.train)

def _read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _capture_cli(args):
    import minigemma
    if args.on_policy and not args.prompts:
        raise ValueError("--on-policy needs --prompts FILE (one prompt per line)")
    if args.prompts and not args.on_policy:
        raise ValueError("--prompts goes with --on-policy; use --text FILE for plain text")
    model = minigemma.load(args.model, backend=args.backend)
    common = dict(k=args.k, seed=args.seed, temperature=args.temperature, weighting=args.weighting)
    if args.on_policy:
        policy = None if args.policy is None else minigemma.load(args.policy, backend=args.backend)
        prompts = _read_text(args.prompts).splitlines()
        targets = capture_on_policy(model, prompts, args.max_new_tokens, policy=policy,
                                    sample_temperature=args.sample_temperature, **common)
    else:
        targets = capture_text(model, _read_text(args.text), args.context, **common)
    targets.save(args.out)
    t = targets.teacher
    print(f"wrote {args.out}: {len(targets)} sequences, {t.ids.shape[0]} target tokens, "
          f"k={args.k}, sparse {t.nbytes / 2**20:.3f} MiB vs dense float32 "
          f"{t.dense_nbytes / 2**20:.1f} MiB")
    return 0


def _score_cli(args):
    import minigemma
    targets = DistillTargets.load(args.targets)
    student = minigemma.load(args.student, backend=args.backend)
    result = score(student, targets)
    print(result.summary())
    return 0


def register_cli(subparsers):
    """Add `minigemma distill capture|score|train` to the CLI's subparsers."""
    p = subparsers.add_parser("distill", help="capture sparse teacher targets; score students")
    sub = p.add_subparsers(dest="distill_command", required=True)
    c = sub.add_parser("capture", help="run a teacher and save k sampled targets per token")
    c.add_argument("--model", default=None, help="teacher model folder (default: embedded)")
    c.add_argument("--backend", default="numpy")
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="FILE", help="text to split into windows")
    source.add_argument("--on-policy", action="store_true",
                        help="score sampled continuations of --prompts (Gemma 2 post-training)")
    c.add_argument("--context", type=int, default=128, help="tokens per text window, BOS included")
    c.add_argument("--prompts", metavar="FILE", help="one prompt per line (with --on-policy)")
    c.add_argument("--max-new-tokens", type=int, default=64)
    c.add_argument("--policy", metavar="DIR", default=None,
                   help="model that samples the continuations, e.g. the student (default: teacher)")
    c.add_argument("--sample-temperature", type=float, default=1.0,
                   help="temperature of the policy's sampling (0 = greedy)")
    c.add_argument("--k", type=int, default=256, help="ids drawn per token (Gemma 3 uses 256)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--temperature", type=float, default=1.0, help="teacher softmax temperature")
    c.add_argument("--weighting", choices=WEIGHTINGS, default="frequency",
                   help="frequency: unbiased (default); renormalised: Gemma 3's, biased")
    c.add_argument("--out", required=True, metavar="FILE.npz")
    c.set_defaults(run=_capture_cli)
    s = sub.add_parser("score", help="distillation loss of a student against saved targets")
    s.add_argument("--student", required=True, metavar="DIR")
    s.add_argument("--targets", required=True, metavar="FILE.npz")
    s.add_argument("--backend", default="numpy")
    s.set_defaults(run=_score_cli)
    from minigemma.training.commands import register_distill_train
    register_distill_train(sub)  # `distill train`: minigemma.training.commands
