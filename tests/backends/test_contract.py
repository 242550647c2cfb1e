"""The backend contract: `Backend`'s abstract ops, and every registered backend class naming
each of them in its own class body (implemented, or delegated to the reference by name).

Classes are imported, never instantiated, so an unavailable backend (CuPy without a GPU) is
checked too.
"""
import inspect
import re

import pytest

import minigemma
from minigemma.backends import backend_class, base
from minigemma.backends.base import Backend
from minigemma.backends.reference import NumpyBackend, delegate_to_reference

OPS = {"asarray", "to_numpy", "prepare_weight", "linear", "linear_many", "geglu_linear", "embed",
       "rms_norm", "rope", "attention", "geglu", "softcap", "conv1d", "rglru_gates",
       "rglru_scan", "distill_loss_and_grad"}
NAMES = list(minigemma.available_backends())


def test_the_contract_is_these_abstract_ops_and_the_op_table_lists_them():
    assert Backend.__abstractmethods__ == OPS
    for op in OPS:
        assert (inspect.getdoc(getattr(Backend, op)) or "").strip(), f"{op} has no docstring"
    table = [line.split("|")[1] for line in base.__doc__.splitlines() if line.startswith("| ")]
    assert set(re.findall(r"(\w+)\(", "".join(table))) == OPS
    with pytest.raises(TypeError, match="abstract"):
        Backend()


@pytest.mark.parametrize("name", NAMES)
def test_every_backend_class_names_every_op_in_its_own_body(name):
    cls = backend_class(name)
    assert issubclass(cls, Backend)
    assert not cls.__abstractmethods__, f"{cls.__name__} leaves out {cls.__abstractmethods__}"
    for op in sorted(OPS):
        assert op in vars(cls), f"{cls.__name__}.{op} is inherited, not named in the class"
        ours = inspect.signature(getattr(cls, op))
        assert ours.parameters == inspect.signature(getattr(Backend, op)).parameters, (
            f"{cls.__name__}.{op}{ours} differs from the contract's signature")
        why = getattr(vars(cls)[op], "delegated_because", None)
        assert why is None or len(why) > 10, f"{cls.__name__}.{op} delegates without a reason"


@pytest.mark.parametrize("name", NAMES)
def test_no_backend_class_inherits_from_another(name):
    cls = backend_class(name)
    for other in NAMES:
        if other != name:
            assert not issubclass(cls, backend_class(other)), f"{name} subclasses {other}"


@pytest.mark.parametrize("missing", sorted(OPS))
def test_a_class_missing_one_op_cannot_be_instantiated(missing):
    def make(ops):
        return type("Partial", (Backend,), {op: getattr(NumpyBackend, op) for op in ops})
    make(OPS)()  # all ops: it can
    with pytest.raises(TypeError, match=missing):
        make(OPS - {missing})()


def test_delegation_is_to_an_op_of_the_contract_and_says_why():
    rope = delegate_to_reference("rope", "a test of the mechanism")
    assert rope.delegated_because == "a test of the mechanism"
    assert "a test of the mechanism" in rope.__doc__
    with pytest.raises(ValueError, match="'log_softmax' is not an op of the backend contract"):
        delegate_to_reference("log_softmax", "removed: nothing calls it")
