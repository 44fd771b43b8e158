"""A 2-layer random Llama (vocab 64, d=32) and a fixed input batch, shared by the adapter tests."""

import torch

from xlt.models import tiny_model

IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))


def _model(seed=1):
    return tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=2, seed=seed)


def _logits(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits
