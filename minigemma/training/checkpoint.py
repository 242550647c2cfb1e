"""Training checkpoints: a student's weights in minigemma's own format, its optimizer's state,
and where the run stood, written atomically (docs/training.md#checkpoints).

    RUN/step-000120/
        model/                  a minigemma checkpoint (native.write_checkpoint): load it with
                                minigemma.load(".../model"), score it, generate with it
        optimizer.safetensors   AdamW's moments, "m.<parameter>" and "v.<parameter>" (float32)
        training.json           {"format": "minigemma-training", "format_version": 1, "step",
                                 "settings": the run's TrainSettings, "optimizer": AdamW's
                                 hyperparameters and step, "files": {name: bytes}}
    RUN/LATEST                  the name of the newest complete checkpoint folder

A checkpoint is written into `.step-000120.partial-…` beside its final name and renamed when
whole, then LATEST is replaced (write-then-rename too): a run killed at any moment leaves the
previous checkpoint intact and named by LATEST. `latest_checkpoint` trusts LATEST only when the
folder it names is complete, and otherwise takes the newest complete one. Older checkpoints
beyond `keep` are deleted once a newer one is in place.
"""
import json
import os
import re
import shutil
import tempfile

import numpy as np

from minigemma.formats.native import write_checkpoint
from minigemma.formats.safetensors import SafetensorsFile, write_safetensors

FORMAT, VERSION = "minigemma-training", 1
MODEL_DIR, OPTIMIZER_FILE, STATE_FILE, LATEST = ("model", "optimizer.safetensors",
                                                 "training.json", "LATEST")
STEP_DIR = re.compile(r"^step-(\d{6,})$")


def step_dir(step):
    return f"step-{step:06d}"


def save(run_dir, step, network, optimizer, settings, tokenizer_bytes=None, keep=2):
    """Write checkpoint `step` of a run into run_dir; returns its folder."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    os.makedirs(run_dir, exist_ok=True)
    final = os.path.join(run_dir, step_dir(step))
    tmp = tempfile.mkdtemp(prefix=f".{step_dir(step)}.partial-", dir=run_dir)
    try:
        be = network.backend
        tensors = [(name, tuple(w.shape), "f32", lambda w=w: be.to_numpy(w))
                   for name, w in network.params.items()]
        write_checkpoint(os.path.join(tmp, MODEL_DIR), network.config, tensors,
                         embedding_dtype="float32", source=f"minigemma train, step {step}",
                         tokenizer_bytes=tokenizer_bytes, extra_meta={"training_step": step})
        arrays = optimizer.state_arrays()
        write_safetensors(os.path.join(tmp, OPTIMIZER_FILE),
                          [(k, tuple(a.shape), "F32", lambda a=a: be.to_numpy(a))
                           for k, a in arrays.items()], metadata={"format": FORMAT})
        state = {"format": FORMAT, "format_version": VERSION, "step": step,
                 "settings": settings, "optimizer": optimizer.hyperparameters(),
                 "files": {OPTIMIZER_FILE: os.path.getsize(os.path.join(tmp, OPTIMIZER_FILE))}}
        _write_json(os.path.join(tmp, STATE_FILE), state)
        if os.path.exists(final):  # a checkpoint of this step from an earlier, resumed run
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text(os.path.join(run_dir, LATEST), step_dir(step))
    for old in checkpoints(run_dir)[:-keep] if keep else []:
        shutil.rmtree(os.path.join(run_dir, old), ignore_errors=True)
    return final


def _write_json(path, value):
    _write_text(path, json.dumps(value, indent=2))


def _write_text(path, text):
    """Write `text` at `path` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def checkpoints(run_dir):
    """The names of the complete checkpoint folders in run_dir, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    names = [n for n in os.listdir(run_dir) if STEP_DIR.match(n)]
    names = [n for n in names if is_complete(os.path.join(run_dir, n))]
    return sorted(names, key=lambda n: int(STEP_DIR.match(n).group(1)))


def is_complete(folder):
    try:
        read_state(folder)
    except (OSError, ValueError):
        return False
    return True


def read_state(folder):
    """The training.json of a checkpoint folder, checked: format, version and file sizes."""
    path = os.path.join(folder, STATE_FILE)
    with open(path) as f:
        try:
            state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from None
    if state.get("format") != FORMAT or state.get("format_version") != VERSION:
        raise ValueError(f"{path} is not a {FORMAT} file of version {VERSION}")
    for name, size in state.get("files", {}).items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file) or os.path.getsize(file) != size:
            raise ValueError(f"{folder}: {name} is missing or damaged")
    if not os.path.isfile(os.path.join(folder, MODEL_DIR, "config.json")):
        raise ValueError(f"{folder}: the model folder is missing")
    return state


def latest_checkpoint(run_dir):
    """The newest complete checkpoint folder of a run, or None."""
    run_dir = os.fspath(run_dir)
    pointer = os.path.join(run_dir, LATEST)
    if os.path.isfile(pointer):
        with open(pointer) as f:
            named = os.path.join(run_dir, f.read().strip())
        if STEP_DIR.match(os.path.basename(named)) and is_complete(named):
            return named
    found = checkpoints(run_dir)
    return os.path.join(run_dir, found[-1]) if found else None


def load(folder, backend="numpy"):
    """(Model, AdamW, state) of a checkpoint folder: the student on `backend`, its optimizer
    with the moments it had, and training.json."""
    import minigemma
    from minigemma.training.optimizer import AdamW
    state = read_state(folder)
    model = minigemma.load(os.path.join(folder, MODEL_DIR), backend=backend)
    moments = SafetensorsFile(os.path.join(folder, OPTIMIZER_FILE))
    arrays = {name: np.asarray(moments.read(name)) for name in moments.names()}
    optimizer = AdamW.from_state(state["optimizer"], arrays, model.backend)
    return model, optimizer, state
