"""Apply a :class:`TransferMapping` to a model: new input embeddings, and a new head if untied."""

from __future__ import annotations

import torch

from xlt.vocab.mapping import TransferMapping, mix_rows
from xlt.vocab.registry import TransferContext, get_init


def transfer_embeddings(model, mapping: TransferMapping, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The new input embedding matrix and, for an untied head, the new output matrix (same mapping)."""
    emb_in = model.get_input_embeddings().weight
    new_in = mix_rows(mapping, emb_in, seed)
    out = model.get_output_embeddings()
    tied = out is None or out.weight is emb_in or out.weight.data_ptr() == emb_in.data_ptr()
    new_out = None if tied else mix_rows(mapping, out.weight, seed + 1)
    return new_in, new_out


def transfer_model(model, target_tokenizer, mapping: TransferMapping, seed: int = 0):
    """Swap the model's vocabulary for ``target_tokenizer``'s, in place; returns the model.

    Builds fresh embedding modules (never ``resize_token_embeddings``, which keeps stale rows), keeps
    the head tied if it was, carries an output bias through the same mapping, and updates the config's
    vocabulary size and special-token ids.
    """
    new_in, new_out = transfer_embeddings(model, mapping, seed)
    old_in = model.get_input_embeddings()
    old_out = model.get_output_embeddings()
    tied = new_out is None
    emb = torch.nn.Embedding(new_in.shape[0], new_in.shape[1], padding_idx=None, dtype=new_in.dtype)
    emb.weight.data.copy_(new_in)
    model.set_input_embeddings(emb)
    if old_out is not None:
        bias = None
        if getattr(old_out, "bias", None) is not None:
            bias = mix_rows(_no_fill(mapping), old_out.bias.detach()[:, None], seed)[:, 0]
        head = torch.nn.Linear(new_in.shape[1], new_in.shape[0], bias=bias is not None, dtype=new_in.dtype)
        if tied:
            head.weight = emb.weight
        else:
            head.weight.data.copy_(new_out)
        if bias is not None:
            head.bias.data.copy_(bias)
        model.set_output_embeddings(head)
    cfg = model.config
    cfg.vocab_size = new_in.shape[0]
    for role in ("bos", "eos", "pad", "unk"):
        tid = getattr(target_tokenizer, f"{role}_token_id", None)
        if hasattr(cfg, f"{role}_token_id") or tid is not None:
            setattr(cfg, f"{role}_token_id", tid)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        for role in ("bos", "eos", "pad"):
            setattr(gen, f"{role}_token_id", getattr(target_tokenizer, f"{role}_token_id", None))
    if tied:
        model.tie_weights()
    del old_in
    return model


def _no_fill(mapping: TransferMapping) -> TransferMapping:
    """Biases of random rows get the mean bias, not a random draw."""
    ev = ["mean" if e == "random" else e for e in mapping.evidence]
    return TransferMapping(mapping.weights, ev, mapping.method)


def build_mapping(method: str, ctx: TransferContext) -> TransferMapping:
    mapping = get_init(method).fn(ctx)
    mapping.check()
    return mapping
