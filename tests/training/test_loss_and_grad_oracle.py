"""Oracle: minigemma.loss_and_grad against PyTorch autograd through HF transformers' own
models, on tiny random-weight Gemma 1, 2, 3 and RecurrentGemma (float32, eager attention).

Each HF model is saved, converted with `minigemma.convert` and loaded; HF's gradients are
mapped to minigemma's names through the converters' own name tables (minigemma.formats.hf,
minigemma.formats.hf_griffin), the Conv1D weight through its one layout change. A norm's HF
parameter is w and minigemma stores 1 + w: the gradient is the same number.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import minigemma
from minigemma.formats import hf as hf_format
from minigemma.formats import hf_griffin
from minigemma.training.losses import sample_teacher

from helpers import hf_tiny_griffin, hf_tiny_models

pytestmark = pytest.mark.oracle
GRAD_RTOL = 1e-4  # max |ours − autograd| / max |autograd|, per tensor, float32
T = 14  # longer than every window of the cases below
CASES = {  # one per family, from the oracle helpers
    "gemma": (hf_tiny_models, "gemma-mqa"),
    "gemma2": (hf_tiny_models, "gemma2-gqa-headdim-scale"),
    "gemma3": (hf_tiny_models, "gemma3-gqa"),
    "recurrentgemma": (hf_tiny_griffin, "rg-mqa"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    helpers, case = CASES[request.param]
    root = tmp_path_factory.mktemp(case)
    hf_model = helpers.make_hf_model(case, root / "hf")
    minigemma.convert(root / "hf", root / "mg", progress=False)
    model = minigemma.load(root / "mg")
    rng = np.random.default_rng(7)
    # no pad id 0: HF's nn.Embedding(padding_idx=0) gives the pad row no gradient from the
    # lookup, a PyTorch convention that is not part of the model (the head still reads it)
    ids = np.concatenate([[[2], [2]], rng.integers(1, helpers.VOCAB, size=(2, T - 1))], axis=1)
    return request.param, hf_model, model, ids


def hf_gradients(hf_model, model, loss):
    """Backpropagate `loss` through the HF model -> {minigemma name: gradient as NumPy}."""
    hf_model.zero_grad()
    loss.backward()
    config = model.config
    table = (hf_griffin.name_table(config) if config.family == "recurrentgemma"
             else hf_format.name_table(config))
    grads = {}
    for hf_name, p in hf_model.named_parameters():
        ours = table[hf_name]
        g = p.grad.detach().double().numpy()
        if ours.endswith("conv_weight"):
            g = g[:, 0, :].T  # HF [L, 1, W] -> minigemma [W, L]
        grads[ours] = g
    return grads


def assert_gradients_match(case, ours, theirs):
    assert set(ours) == set(theirs), f"{case}: parameters differ"
    worst = {}
    for name, g in theirs.items():
        scale = np.abs(g).max()
        assert scale > 0, f"{case}: HF's gradient of {name} is zero"
        worst[name] = np.abs(ours[name] - g).max() / scale
    name = max(worst, key=worst.get)
    assert worst[name] <= GRAD_RTOL, f"{case}: {name} relative error {worst[name]:.3g}"


def test_next_token_loss_and_gradients_match_autograd(pair):
    case, hf_model, model, ids = pair
    out = hf_model(input_ids=torch.tensor(ids), labels=torch.tensor(ids), use_cache=False)
    theirs = hf_gradients(hf_model, model, out.loss)
    loss, ours = minigemma.loss_and_grad(model, ids)
    assert abs(loss - out.loss.item()) <= 1e-5 * abs(out.loss.item())
    assert_gradients_match(case, ours, theirs)


def torch_distillation_loss(student_logits, target_probs, tau):
    """(1/N) Σ −Σ_x q(x) log softmax(z / τ)(x) over every position."""
    log_p = torch.log_softmax(student_logits.double() / tau, dim=-1)
    return -(target_probs * log_p).sum(-1).mean()


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("pair", ["gemma2", "gemma3"], indirect=True)  # one head: two suffice
def test_distillation_gradients_match_autograd(pair, kind):
    case, hf_model, model, ids = pair
    tau, V = 1.7, model.config.vocab_size
    rng = np.random.default_rng(11)
    teacher_logits = (3 * rng.standard_normal((*ids.shape, V))).astype(np.float32)
    z = torch.tensor(teacher_logits, dtype=torch.float64) / tau
    if kind == "dense":
        teacher = teacher_logits
        q = torch.softmax(z, dim=-1)
    else:
        teacher = sample_teacher(teacher_logits.reshape(-1, V), k=8, seed=3, temperature=tau)
        q = torch.zeros(ids.size, V, dtype=torch.float64)
        q.scatter_add_(1, torch.tensor(teacher.ids, dtype=torch.long),
                       torch.tensor(teacher.probs, dtype=torch.float64))
        q = q.reshape(*ids.shape, V)
    logits = hf_model(input_ids=torch.tensor(ids), use_cache=False).logits
    loss_t = torch_distillation_loss(logits, q, tau)
    theirs = hf_gradients(hf_model, model, loss_t)
    loss, ours = minigemma.loss_and_grad(model, ids, teacher=teacher, temperature=tau)
    assert abs(loss - loss_t.item()) <= 1e-5 * abs(loss_t.item())
    assert_gradients_match(case, ours, theirs)
