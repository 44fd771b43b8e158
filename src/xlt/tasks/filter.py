"""FILTER: fusion of a text and its translation inside one encoder (Fang et al., AAAI 2021; arXiv 2009.05166).

:class:`FusionEncoder` runs a BERT-style encoder (``embeddings`` + ``encoder.layer``; e5, mBERT, a tiny BERT) on two
streams with shared weights: the English text and the target-language text (in training: English data and its
translation; at inference: the target text and its translation into English). Each stream is embedded on its own
(positions restart at 0), then

- layers ``0 … m−1`` (**local**) run on each stream separately,
- layers ``m … m+k−1`` (**fusion**) run on the concatenation ``[english; target]`` along the sequence axis, with the
  concatenated padding mask, so every token attends to both texts,
- the hidden states are split back at the English length and layers ``m+k …`` (**domain**) run per stream.

Two linear heads read each stream's pooled vector. :func:`self_teaching_loss` is the paper's training loss,

    L = (1 − α) · CE(z_target, y) + α · T² · KL(softmax(z_teacher / T) ‖ softmax(z_target / T)) + CE(z_english, y),

where z_teacher are the target-stream logits of a first-stage FILTER (phase 1 trains with α = 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xlt.errors import XltError
from xlt.options import non_negative, option, positive, unit_interval
from xlt.tasks.registry import register_loss, register_module

PAPER = "Fang, Wang, Gan, Sun, Liu; AAAI 2021; arXiv 2009.05166 (FILTER)"
FORMAT = "xlt-filter-1"


@dataclass
class FusionOptions:
    m: int = option(1, "local layers run on each stream separately", check=non_negative)
    k: int = option(1, "fusion layers over the concatenated streams", check=non_negative)
    num_labels: int = option(2, "classes of the two heads", check=positive)
    pooling: Literal["cls", "mean"] = option("cls", "stream vector: the first token or the mean over its tokens")


@dataclass
class SelfTeachingOptions:
    alpha: float = option(0.5, "weight of the KL self-teaching term (1 − alpha on the target cross-entropy)",
                          check=unit_interval)
    temperature: float = option(0.1, "softmax temperature T of the KL term (scaled by T²; FILTER's default 0.1)",
                                check=positive)


class FusionOutput(NamedTuple):
    english_hidden: torch.Tensor  # (batch, english length, d)
    target_hidden: torch.Tensor  # (batch, target length, d)
    english_logits: torch.Tensor  # (batch, labels)
    target_logits: torch.Tensor  # (batch, labels)


def _bert_parts(encoder) -> tuple[nn.Module, nn.Module, nn.ModuleList]:
    """The (model, embeddings, layers) of a BERT-style encoder or of a task model wrapping one."""
    model = encoder
    for _ in range(3):
        if hasattr(model, "embeddings") and hasattr(getattr(model, "encoder", None), "layer"):
            return model, model.embeddings, model.encoder.layer
        model = getattr(model, "base_model", None) if getattr(model, "base_model", None) is not model else None
        if model is None:
            break
    raise XltError(f"FILTER needs a BERT-style encoder (embeddings + encoder.layer), not {type(encoder).__name__}",
                   "give a BertModel (e.g. `xlt models prepare e5`, then load it with transformers.AutoModel)")


def _mask(config, hidden: torch.Tensor, attention_mask: torch.Tensor):
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attention_mask)


@register_module("filter", description="FILTER fusion encoder: m local layers per stream, k fusion layers over "
                 "[english; target], the rest per stream; a classification head per stream",
                 options=FusionOptions, paper=PAPER)
class FusionEncoder(nn.Module):
    """FILTER over ``encoder`` (module docstring); ``m + k`` may not exceed the encoder's layers."""

    def __init__(self, encoder, m: int = 1, k: int = 1, num_labels: int = 2, pooling: str = "cls"):
        super().__init__()
        model, _, layers = _bert_parts(encoder)
        n = len(layers)
        if m < 0 or k < 0 or m + k > n:
            raise XltError(f"FILTER with m = {m} local and k = {k} fusion layers, but the encoder has {n} layers",
                           f"choose m, k ≥ 0 with m + k ≤ {n} (the paper's default: m = 1, k = 1)")
        if pooling not in ("cls", "mean"):
            raise XltError(f"unknown pooling {pooling!r}", "choose cls or mean")
        if num_labels < 1:
            raise XltError(f"num_labels = {num_labels}", "give at least one class")
        self.encoder, self.m, self.k, self.pooling = model, m, k, pooling
        d = model.config.hidden_size
        self.head_english = nn.Linear(d, num_labels)
        self.head_target = nn.Linear(d, num_labels)

    @property
    def num_layers(self) -> int:
        return len(self.encoder.encoder.layer)

    def _pool(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return h[:, 0]
        w = mask.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)

    def encode(self, english_ids: torch.Tensor, target_ids: torch.Tensor, english_mask: torch.Tensor | None = None,
               target_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The last hidden states of both streams, each of its input's length."""
        if english_ids.shape[0] != target_ids.shape[0]:
            raise XltError(f"{english_ids.shape[0]} English and {target_ids.shape[0]} target texts",
                           "give each text with its translation (the same batch size for both streams)")
        em = torch.ones_like(english_ids) if english_mask is None else english_mask
        tm = torch.ones_like(target_ids) if target_mask is None else target_mask
        cfg, emb, layers = self.encoder.config, self.encoder.embeddings, self.encoder.encoder.layer
        he, ht = emb(input_ids=english_ids), emb(input_ids=target_ids)
        me, mt = _mask(cfg, he, em), _mask(cfg, ht, tm)
        for layer in layers[:self.m]:
            he, ht = layer(he, me), layer(ht, mt)
        if self.k:
            h = torch.cat([he, ht], dim=1)
            mask = torch.cat([em, tm], dim=1)
            mh = _mask(cfg, h, mask)
            for layer in layers[self.m:self.m + self.k]:
                h = layer(h, mh)
            he, ht = h[:, :english_ids.shape[1]], h[:, english_ids.shape[1]:]
        for layer in layers[self.m + self.k:]:
            he, ht = layer(he, me), layer(ht, mt)
        return he, ht

    def forward(self, english_ids: torch.Tensor, target_ids: torch.Tensor, english_mask: torch.Tensor | None = None,
                target_mask: torch.Tensor | None = None) -> FusionOutput:
        he, ht = self.encode(english_ids, target_ids, english_mask, target_mask)
        em = torch.ones_like(english_ids) if english_mask is None else english_mask
        tm = torch.ones_like(target_ids) if target_mask is None else target_mask
        return FusionOutput(he, ht, self.head_english(self._pool(he, em)), self.head_target(self._pool(ht, tm)))

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """The encoder (``save_pretrained``), the heads and ``filter.json``, written atomically into ``folder``."""
        from safetensors.torch import save_file

        from xlt.util import atomic_dir, write_json_atomic

        with atomic_dir(folder, overwrite=overwrite) as tmp:
            self.encoder.save_pretrained(str(tmp / "encoder"))
            save_file({f"{n}.{p}": t.detach().contiguous() for n in ("head_english", "head_target")
                       for p, t in getattr(self, n).state_dict().items()}, str(tmp / "heads.safetensors"))
            write_json_atomic(tmp / "filter.json", {"format": FORMAT, "m": self.m, "k": self.k,
                                                    "num_labels": self.head_target.out_features,
                                                    "pooling": self.pooling})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "FusionEncoder":
        from safetensors.torch import load_file
        from transformers import AutoModel

        folder = Path(folder)
        meta_path = folder / "filter.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("format") != FORMAT:
            raise XltError(f"{folder} is not a FILTER model saved by xlt (no {FORMAT} filter.json)",
                           "give a folder written by FusionEncoder.save")
        enc = AutoModel.from_pretrained(str(folder / "encoder"), dtype=torch.float32)
        model = cls(enc, meta["m"], meta["k"], meta["num_labels"], meta["pooling"])
        state = load_file(str(folder / "heads.safetensors"))
        for n in ("head_english", "head_target"):
            getattr(model, n).load_state_dict({p.split(".", 1)[1]: t for p, t in state.items()
                                               if p.startswith(n + ".")})
        return model.eval()


def _example(g: torch.Generator):
    b, c = 4, 3
    zt, ze = (torch.randn(b, c, generator=g).requires_grad_(True) for _ in range(2))
    teacher = torch.randn(b, c, generator=g)
    y = torch.tensor([0, 2, 1, 2])
    return (zt, ze, y), {"teacher_logits": teacher, "alpha": 0.5, "temperature": 0.5}


@register_loss("filter_self_teaching", description="FILTER: (1-α)·CE(target) + α·T²·KL(teacher ‖ target) + "
               "CE(english) over the two stream heads", options=SelfTeachingOptions, example=_example, paper=PAPER)
def self_teaching_loss(target_logits: torch.Tensor, english_logits: torch.Tensor, labels: torch.Tensor,
                       teacher_logits: torch.Tensor | None = None, alpha: float = 0.5,
                       temperature: float = 0.1) -> torch.Tensor:
    """FILTER's loss (module docstring) over (batch, C) logits, or (batch, length, C) for tagging with label −100
    on ignored positions (they count in neither term). ``alpha = 0`` needs no teacher; the teacher gets no
    gradient."""
    if not 0.0 <= alpha <= 1.0:
        raise XltError(f"alpha = {alpha}", "choose 0 ≤ alpha ≤ 1 (0: phase 1 without self-teaching)")
    if temperature <= 0:
        raise XltError(f"temperature = {temperature}", "give a positive temperature (FILTER's default 0.1)")
    if target_logits.shape != english_logits.shape:
        raise XltError(f"target logits {tuple(target_logits.shape)} and English logits "
                       f"{tuple(english_logits.shape)}", "give both heads' logits for the same examples")
    c = target_logits.shape[-1]
    zt, ze, y = target_logits.reshape(-1, c), english_logits.reshape(-1, c), labels.reshape(-1)
    if y.numel() != zt.shape[0]:
        raise XltError(f"{y.numel()} labels for {zt.shape[0]} predictions", "give one label per example (or token)")
    ok = y != -100
    loss = (1.0 - alpha) * F.cross_entropy(zt[ok], y[ok]) + F.cross_entropy(ze[ok], y[ok])
    if alpha > 0:
        if teacher_logits is None:
            raise XltError(f"self-teaching with alpha = {alpha} but no teacher logits",
                           "pass teacher_logits from the phase-1 FILTER model, or alpha = 0")
        if teacher_logits.shape != target_logits.shape:
            raise XltError(f"teacher logits {tuple(teacher_logits.shape)} for student logits "
                           f"{tuple(target_logits.shape)}", "give the teacher's target-stream logits of the same batch")
        zteach = teacher_logits.reshape(-1, c)[ok].detach()
        kl = F.kl_div(F.log_softmax(zt[ok] / temperature, -1), F.softmax(zteach / temperature, -1),
                      reduction="batchmean")
        loss = loss + alpha * temperature ** 2 * kl
    return loss
