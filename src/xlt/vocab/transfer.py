"""Apply a :class:`TransferMapping` to a model: new input embeddings, and a new head if untied."""

from __future__ import annotations

import torch

from xlt.vocab.mapping import TransferMapping, mix_rows
from xlt.vocab.registry import TransferContext, get_init


def transfer_embeddings(model, mapping: TransferMapping, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The new input embedding matrix and, for an untied head, the new output matrix (same mapping)."""
    from xlt import arch

    emb_in = model.get_input_embeddings().weight
    new_in = mix_rows(mapping, emb_in, seed)
    new_out = None if arch.is_tied(model) else mix_rows(mapping, model.get_output_embeddings().weight, seed + 1)
    return new_in, new_out


def transfer_model(model, target_tokenizer, mapping: TransferMapping, seed: int = 0):
    """Swap the model's vocabulary for ``target_tokenizer``'s, in place; returns the model.

    Gives the embedding module new rows in place (never ``resize_token_embeddings``, which keeps stale rows; the
    module keeps its class, so Gemma's scaled embedding keeps its scale), keeps the head tied if it was, carries an
    output bias through the same mapping, and updates every ``vocab_size`` (:func:`xlt.arch.replace_vocabulary`)
    and the special-token ids of the config and the generation config.
    """
    from xlt import arch

    new_in, new_out = transfer_embeddings(model, mapping, seed)
    old_out = model.get_output_embeddings()
    bias = None
    if old_out is not None and getattr(old_out, "bias", None) is not None:
        bias = mix_rows(_no_fill(mapping), old_out.bias.detach()[:, None], seed)[:, 0]
    arch.set_special_token_ids(model, target_tokenizer)
    arch.replace_vocabulary(model, new_in, new_out, bias, getattr(target_tokenizer, "pad_token_id", None))
    return model


def _no_fill(mapping: TransferMapping) -> TransferMapping:
    """Biases of random rows get the mean bias, not a random draw."""
    ev = ["mean" if e == "random" else e for e in mapping.evidence]
    return TransferMapping(mapping.weights, ev, mapping.method)


def build_mapping(method: str, ctx: TransferContext, options=None) -> TransferMapping:
    """Run init ``method``: its options are built from ``options`` (its options dataclass, or a dict) or else from
    ``ctx.options`` (unknown keys and wrong types refused), and the mapping it returns is checked."""
    from xlt.options import as_dict
    from xlt.vocab.registry import INITS

    spec = get_init(method)
    if options is None or isinstance(options, dict):
        options = INITS.options(method, ctx.options if options is None else options)
    mapping = spec.fn(ctx, options)
    mapping.check()
    mapping.options = as_dict(options)
    return mapping
