"""Contracts every registered task loss and module keeps (xlt.tasks.registry), without new test code per entry.

Losses: on their declared example, a finite scalar; finite gradients reaching at least one input; the same value
when called twice; an unknown name gives one error listing the registered losses. Modules: an ``nn.Module`` subclass
with a description and an options dataclass.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from xlt.errors import XltError
from xlt.tasks import losses
from xlt.tasks.registry import LOSSES, MODULES

LOSS_NAMES = LOSSES.names()
MODULE_NAMES = MODULES.names()


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _tensors(y)


@pytest.mark.parametrize("name", LOSS_NAMES or [pytest.param(None, marks=pytest.mark.skip(reason="no task loss yet"))])
def test_loss_contract(name):
    entry = losses.get(name)
    assert entry.description and dataclasses.is_dataclass(entry.options)
    args, kwargs = entry.example(torch.Generator().manual_seed(0))
    value = entry(*args, **kwargs)
    assert isinstance(value, torch.Tensor) and value.dim() == 0 and torch.isfinite(value), name
    leaves = [t for t in _tensors((args, kwargs)) if t.requires_grad]
    assert leaves, f"{name}: the example has no input that requires a gradient"
    value.backward()
    grads = [t.grad for t in leaves if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), name
    assert any(bool(g.abs().sum() > 0) for g in grads), f"{name}: no gradient reaches the inputs"
    again = entry(*args, **kwargs)
    assert torch.equal(again.detach(), value.detach()), f"{name} is not deterministic"


@pytest.mark.parametrize("name", MODULE_NAMES or [pytest.param(None, marks=pytest.mark.skip(reason="no task module yet"))])
def test_module_contract(name):
    entry = MODULES.get(name)
    assert entry.description and dataclasses.is_dataclass(entry.options)
    assert issubclass(entry.cls, torch.nn.Module)


def test_unknown_loss_lists_the_registered_ones():
    with pytest.raises(XltError) as e:
        losses.get("no-such-loss")
    assert "no-such-loss" in str(e.value.problem)
