"""The one place that knows model architectures (mergekit's ``_data/architectures`` is the model).

Per family: where the transformer layers are, the attention and feed-forward sublayers of a layer, the linear
layers LoRA targets in each, the tensor names of the token embeddings, the other tensors before the first layer
and the output head, and which ``vocab_size`` attributes must follow a vocabulary change. Vocabulary transfer,
adaptation methods, adapter composition and the merge engine ask this module instead of guessing names.

Families: ``llama`` (also Mistral, Qwen3, OLMo, Granite, SmolLM), ``gemma3``, ``qwen2``, ``gpt2``, ``olmoe``,
``mixtral`` and ``bert``. A model of another ``model_type`` is handled by its layout when it has a known one
(e.g. ``model.layers`` with ``self_attn``/``mlp``); otherwise the error lists the supported families.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xlt.errors import XltError


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: tuple[str, ...]
    layers: str  # attribute path from the task model (``*ForCausalLM``) to the list of layers
    attention: str  # attribute of a layer: the attention sublayer
    ffn: str  # attribute of a layer: the feed-forward sublayer (the MoE block for MoE models)
    lora_attention: tuple[str, ...]  # LoRA targets (name suffixes) of "attention" (the unified view's q, v)
    lora_ffn: tuple[str, ...]  # LoRA targets of "ffn" (empty: the experts are fused tensors, not linear layers)
    embedding: str  # tensor name of the token embeddings
    head: str | None  # tensor name of the output head weight (None: tied to the embeddings, not stored)
    pre_layer: tuple[str, ...] = ()  # other tensors before the first layer (positions, token types, embedding norm)
    head_bias: str | None = None
    causal: bool = True
    moe: bool = False

    @property
    def layer_prefix(self) -> str:
        return self.layers + "."

    def vocab_tensors(self) -> tuple[str, ...]:
        """Tensors with one row per vocabulary entry."""
        return tuple(n for n in (self.embedding, self.head, self.head_bias) if n)


_LLAMA = dict(layers="model.layers", attention="self_attn", ffn="mlp", lora_attention=("q_proj", "v_proj"),
              lora_ffn=("up_proj", "down_proj"), embedding="model.embed_tokens.weight", head="lm_head.weight")

FAMILIES: dict[str, Architecture] = {a.family: a for a in (
    Architecture("llama", ("llama", "mistral", "qwen3", "olmo", "olmo2", "granite", "smollm3", "phi3"), **_LLAMA),
    Architecture("gemma3", ("gemma3_text", "gemma3", "gemma2", "gemma"), **_LLAMA),
    Architecture("qwen2", ("qwen2",), **_LLAMA),
    Architecture("olmoe", ("olmoe",), **{**_LLAMA, "lora_ffn": ()}, moe=True),
    Architecture("mixtral", ("mixtral", "qwen2_moe", "qwen3_moe"), **{**_LLAMA, "lora_ffn": ()}, moe=True),
    Architecture("gpt2", ("gpt2",), layers="transformer.h", attention="attn", ffn="mlp", lora_attention=("c_attn",),
                 lora_ffn=("c_fc", "mlp.c_proj"), embedding="transformer.wte.weight", head="lm_head.weight",
                 pre_layer=("transformer.wpe.weight",)),
    Architecture("bert", ("bert",), layers="bert.encoder.layer", attention="attention", ffn="output",
                 lora_attention=("query", "value"), lora_ffn=("intermediate.dense", "output.dense"),
                 embedding="bert.embeddings.word_embeddings.weight", head="cls.predictions.decoder.weight",
                 pre_layer=("bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight",
                            "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"),
                 head_bias="cls.predictions.bias", causal=False),
)}
_BY_TYPE = {t: a for a in FAMILIES.values() for t in a.model_types}


def _config_dict(config) -> dict:
    if isinstance(config, dict):
        return config
    return config.to_dict() if hasattr(config, "to_dict") else vars(config)


def for_config(config) -> Architecture | None:
    """The family of a config (a ``PretrainedConfig`` or its ``config.json`` dict); None when unknown."""
    c = _config_dict(config)
    a = _BY_TYPE.get(str(c.get("model_type")))
    if a is None and isinstance(c.get("text_config"), dict):
        a = _BY_TYPE.get(str(c["text_config"].get("model_type")))
    return a


def _base(model):
    return getattr(model, "get_base_model", lambda: model)()


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def of(model) -> Architecture:
    """The family of a loaded model (by ``config.model_type``, else by its layout)."""
    base = _base(model)
    a = for_config(base.config)
    if a is not None:
        return a
    for cand in FAMILIES.values():  # an unlisted model_type with a known layout (e.g. another Llama-like)
        try:
            layer = _get(base, cand.layers)[0]
            _get(layer, cand.attention), _get(layer, cand.ffn)
            return cand
        except (AttributeError, IndexError, TypeError):
            continue
    raise XltError(f"xlt does not know the architecture of {type(base).__name__} "
                   f"(model_type {getattr(base.config, 'model_type', '?')!r})",
                   f"use a model of a supported family: {', '.join(FAMILIES)} (xlt/arch.py lists them)")


# -- modules of a loaded model --------------------------------------------------------------------------------
def layers(model) -> list:
    """The transformer layers, bottom first."""
    return list(layer_list(model))


def layer_list(model):
    """The ``nn.ModuleList`` that holds the layers (to loop or replace them)."""
    a = of(model)
    return _get(_base(model), a.layers)


def attention(layer, model) -> object:
    return _sub(layer, of(model).attention, "attention", model)


def ffn(layer, model) -> object:
    return _sub(layer, of(model).ffn, "feed-forward", model)


def _sub(layer, name: str, what: str, model):
    try:
        return _get(layer, name)
    except AttributeError:
        raise XltError(f"cannot find the {what} sublayer ({name}) of {type(layer).__name__}",
                       f"{of(model).family} layers are expected to have it; is the model modified?") from None


def lora_targets(model, where: str) -> list[str]:
    """The LoRA target suffixes of ``where`` (``attention`` or ``ffn``) for this model's family."""
    a = of(model)
    t = a.lora_attention if where == "attention" else a.lora_ffn
    if not t:
        raise XltError(f"{a.family} has no linear {where} layers for LoRA (its experts are fused tensors)",
                       "use where=attention, or an adapter (function=adapter) on the FFN")
    return list(t)


def embedding_parameters(model) -> list:
    """The input embedding matrix and, when untied, the output head's weight (and bias)."""
    base = _base(model)
    params = [base.get_input_embeddings().weight]
    out = base.get_output_embeddings()
    if out is not None and out.weight is not params[0]:
        params.append(out.weight)
    if out is not None and getattr(out, "bias", None) is not None:
        params.append(out.bias)
    return params


def is_tied(model) -> bool:
    base = _base(model)
    out = base.get_output_embeddings()
    emb = base.get_input_embeddings().weight
    return out is None or out.weight is emb or out.weight.data_ptr() == emb.data_ptr()


def set_vocab_size(model, n: int) -> None:
    """Make every ``vocab_size`` that must follow the embeddings say ``n``: the config (and its text config) and the
    modules that keep their own copy (e.g. ``Gemma3ForCausalLM.vocab_size``, which its loss reads)."""
    base = _base(model)
    cfgs = [base.config]
    if hasattr(base.config, "get_text_config"):
        cfgs.append(base.config.get_text_config())
    for c in cfgs:
        if hasattr(c, "vocab_size"):
            c.vocab_size = n
    for m in base.modules():
        if isinstance(getattr(m, "vocab_size", None), int):
            m.vocab_size = n


def configs(model) -> list:
    """The model's config and, where it differs (multimodal wrappers such as Gemma-3's), its text config."""
    cfg = model.config
    out = {id(cfg): cfg}
    if hasattr(cfg, "get_text_config"):
        out[id(cfg.get_text_config())] = cfg.get_text_config()
    return list(out.values())


def set_special_token_ids(model, tokenizer) -> None:
    """The bos/eos/pad/unk ids of the config(s) and bos/eos/pad of the generation config set to ``tokenizer``'s (a
    config key the tokenizer has no token for is set to None), as after a vocabulary change."""
    for c in configs(model):
        for role in ("bos", "eos", "pad", "unk"):
            tid = getattr(tokenizer, f"{role}_token_id", None)
            if hasattr(c, f"{role}_token_id") or tid is not None:
                setattr(c, f"{role}_token_id", tid)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        for role in ("bos", "eos", "pad"):
            setattr(gen, f"{role}_token_id", getattr(tokenizer, f"{role}_token_id", None))


def replace_vocabulary(model, emb_weight, head_weight=None, head_bias=None, padding_idx: int | None = None):
    """Give the model new embedding rows in place: the embedding module keeps its class (Gemma's scaled embedding
    keeps its scale), a tied head stays tied to the new matrix, an untied head gets ``head_weight`` (and
    ``head_bias``), and every ``vocab_size`` follows. Returns the model."""
    import torch

    base = _base(model)
    n, d = emb_weight.shape
    tied = is_tied(base)
    emb = base.get_input_embeddings()
    emb.weight = torch.nn.Parameter(emb_weight.detach().clone().contiguous())
    emb.num_embeddings = n
    if hasattr(emb, "padding_idx"):
        emb.padding_idx = padding_idx if padding_idx is not None and 0 <= padding_idx < n else None
    head = base.get_output_embeddings()
    if head is not None:
        if tied:
            head.weight = emb.weight
        else:
            if head_weight is None:
                raise ValueError("an untied head needs head_weight")
            head.weight = torch.nn.Parameter(head_weight.detach().clone().contiguous())
        if getattr(head, "bias", None) is not None:
            if head_bias is None:
                raise ValueError("a head with a bias needs head_bias")
            head.bias = torch.nn.Parameter(head_bias.detach().clone().contiguous())
            if of(base).head_bias:  # BERT keeps the bias as a separate parameter too
                try:
                    owner, _, attr = of(base).head_bias.rpartition(".")
                    setattr(_get(base, owner), attr, head.bias)
                except AttributeError:
                    pass
        if hasattr(head, "out_features"):
            head.out_features = n
    set_vocab_size(base, n)
    return model


def resize_vocabulary(model, n: int):
    """Resize the embeddings (and head) to ``n`` rows in place, keeping the first rows and zeroing new ones (to be
    overwritten, e.g. by saved embeddings)."""
    import torch

    base = _base(model)

    def resized(t, rows):
        out = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype)
        k = min(rows, t.shape[0])
        out[:k] = t.detach()[:k]
        return out

    emb = base.get_input_embeddings().weight
    head = base.get_output_embeddings()
    tied = is_tied(base)
    hw = None if head is None or tied else resized(head.weight, n)
    hb = resized(head.bias, n) if head is not None and getattr(head, "bias", None) is not None else None
    return replace_vocabulary(model, resized(emb, n), hw, hb, getattr(base.config, "pad_token_id", None))


# -- tensor names (the merge engine reads checkpoints, not modules) -------------------------------------------
_GENERIC_LAYER = re.compile(r"^(?P<pre>(?:.*\.)?)(?P<kind>layers|h|blocks|block|layer)\.(?P<idx>\d+)\.(?P<rest>.+)$")
_EMBED_HINTS = ("embed_tokens", "wte", "word_embeddings")
_PRE_HINTS = ("embed", "wte", "wpe", "word_embeddings")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def split_layer(name: str, a: Architecture | None = None) -> tuple[str, int, str] | None:
    """``model.layers.3.mlp.up.weight`` -> ``("model.layers.", 3, "mlp.up.weight")`` (None outside the layers)."""
    if a is not None and name.startswith(a.layer_prefix):
        idx, _, rest = name[len(a.layer_prefix):].partition(".")
        if idx.isdigit() and rest:
            return a.layer_prefix, int(idx), rest
        return None
    m = _GENERIC_LAYER.match(name)
    if not m:
        return None
    return m["pre"] + m["kind"] + ".", int(m["idx"]), m["rest"]


def is_embedding(name: str, a: Architecture | None = None) -> bool:
    """The token-embedding tensor."""
    if a is not None:
        return name == a.embedding
    return any(k in name for k in _EMBED_HINTS)


def is_pre_layer(name: str, a: Architecture | None = None) -> bool:
    """Tensors that come before the first layer (embeddings, positions); the rest outside the layers come after."""
    if a is not None:
        return name == a.embedding or name in a.pre_layer
    return any(k in name for k in _PRE_HINTS)


def is_head(name: str, a: Architecture | None = None) -> bool:
    if a is not None:
        return name in (a.head, a.head_bias)
    return "lm_head" in name or name.endswith("head.weight")


def n_layers(config: dict) -> int | None:
    for k in LAYER_KEYS:
        if isinstance(config.get(k), int):
            return config[k]
    for sub in ("text_config", "language_config"):
        if isinstance(config.get(sub), dict):
            n = n_layers(config[sub])
            if n is not None:
                return n
    return None


def vocab_size(config: dict) -> int | None:
    v = config.get("vocab_size")
    if v is None and isinstance(config.get("text_config"), dict):
        v = config["text_config"].get("vocab_size")
    return v


def set_config_layers(config: dict, n: int) -> None:
    """Set the layer count of a ``config.json`` dict (and per-layer lists such as Gemma's ``layer_types``)."""
    for c in (config, config.get("text_config")):
        if not isinstance(c, dict):
            continue
        for k in LAYER_KEYS:
            if k in c:
                c[k] = n
        if isinstance(c.get("layer_types"), list) and len(c["layer_types"]) != n:
            lt = c["layer_types"]
            c["layer_types"] = (lt * (n // len(lt) + 1))[:n]  # the pattern repeated (or cut)
