"""Multi-head models (Hydra-style): one input vocabulary, one output head per language.

After a vocabulary transfer the model reads and writes the target vocabulary; the source model's output
head (and tokenizer) can be kept beside the new one, so the same network can also predict source-language
tokens. Saved as an ordinary HF folder (the target head is the model's own) plus ``heads/<lang>/`` with the
extra head's weights (safetensors) and its tokenizer; :func:`load_multihead` restores it and
:meth:`MultiHeadLM.use_head` switches heads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xlt.errors import XltError


def save_extra_head(model_dir: str | Path, lang: str, head_weight: torch.Tensor, tokenizer, bias: torch.Tensor | None = None) -> Path:
    """Store ``head_weight`` (vocab × d) and ``tokenizer`` as the ``lang`` head of the model in ``model_dir``."""
    from safetensors.torch import save_file

    d = Path(model_dir) / "heads" / lang
    d.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": head_weight.detach().contiguous().clone()}
    if bias is not None:
        tensors["bias"] = bias.detach().contiguous().clone()
    save_file(tensors, str(d / "head.safetensors"))
    tokenizer.save_pretrained(d)
    index = Path(model_dir) / "heads" / "heads.json"
    meta = json.loads(index.read_text()) if index.is_file() else {}
    meta[lang] = {"vocab_size": int(head_weight.shape[0])}
    index.write_text(json.dumps(meta, indent=2))
    return d


class MultiHeadLM:
    """A causal LM with its own (target) head plus extra heads by language."""

    def __init__(self, model, tokenizer, heads: dict[str, tuple[torch.nn.Module, object]], default: str):
        self.model = model
        self.heads = {default: (model.get_output_embeddings(), tokenizer), **heads}
        self.default = default
        self.current = default

    def use_head(self, lang: str) -> "MultiHeadLM":
        if lang not in self.heads:
            raise XltError(f"no output head for {lang!r}", f"choose one of: {', '.join(self.heads)}")
        head, _ = self.heads[lang]
        self.model.set_output_embeddings(head)
        self.model.config.tie_word_embeddings = lang == self.default and self.model.config.tie_word_embeddings
        self.current = lang
        return self

    @property
    def tokenizer(self):
        """The tokenizer that decodes the current head's outputs."""
        return self.heads[self.current][1]

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def load_multihead(model_dir: str | Path, default: str = "target") -> MultiHeadLM:
    from safetensors.torch import load_file

    from xlt.models import load_model, load_tokenizer

    model_dir = Path(model_dir)
    model = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    heads = {}
    index = model_dir / "heads" / "heads.json"
    for lang in json.loads(index.read_text()) if index.is_file() else {}:
        t = load_file(str(model_dir / "heads" / lang / "head.safetensors"))
        w = t["weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias="bias" in t, dtype=w.dtype)
        lin.weight.data.copy_(w)
        if "bias" in t:
            lin.bias.data.copy_(t["bias"])
        heads[lang] = (lin, load_tokenizer(model_dir / "heads" / lang))
    return MultiHeadLM(model, tok, heads, default)
