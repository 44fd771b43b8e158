"""Second-stage adaptation methods for ``xlt adapt --method``: one name, one small class, one options dataclass.

A method decides what stage 2 trains (``full``: the whole model; ``lora``: PEFT LoRA; ``sft``: a sparse
delta, ...), how it trains (most use one :class:`~xlt.adapt.train.Trainer`; LT-SFT runs phases) and how the
result is saved as a folder that loads back exactly (:func:`load_adapted`). Stage 1 (embeddings only) is
the same for every method. Register a method with ``@register_adaptation("name", options=MyOptions)``
(``MyOptions``: a dataclass of :func:`xlt.options.option` fields; ``-M KEY=VALUE`` is built into it and checked);
third-party packages add methods through the ``xlt.adaptations`` entry-point group.

Parameter-efficient folders do not copy the base model: they hold the method's weights, the new
embeddings and ``xlt_method.json`` with the base model's portable name (:func:`portable_base_name`: a prepared
model's name such as ``smollm2``, or the source folder as the user gave it, never an absolute path) and a
fingerprint of its weights; loading on another base raises. Such a method writes and reads only its own
weights (it defines the hooks ``save_weights`` and ``load_weights``, see :attr:`Method.whole_model`); :meth:`Method.save` and
:meth:`Method.load` do the rest, the same way for every method.

Methods that PEFT can express (``lora``, ``mos`` as its materialised LoRA, ``lora-attn``/``lora-ffn``, ``prefix``)
write a standard PEFT adapter (:func:`save_peft_adapter`): the new input embeddings (and an untied head) are inside
``adapter_model.safetensors`` (PEFT's ``save_embedding_layers``), the base is named portably in
``adapter_config.json`` and the target tokenizer lies beside it, so that plain peft loads the folder::

    tok = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(source)
    base.resize_token_embeddings(len(tok))
    model = PeftModel.from_pretrained(base, folder)  # the same logits as load_adapted(folder)

The other methods keep the embeddings in ``embeddings.safetensors``; ``xlt_method.json`` says which file holds them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from xlt import arch
from xlt.errors import XltError
from xlt.options import NoOptions, as_dict
from xlt.registry import Registry

ADAPTATIONS: Registry[type] = Registry("adaptation method", "xlt.adaptations", builtins=(
    "xlt.adapt.methods.full", "xlt.adapt.methods.lora", "xlt.adapt.methods.sparse", "xlt.adapt.methods.mos",
    "xlt.adapt.methods.recursive", "xlt.adapt.methods.unified"))
META = "xlt_method.json"
EMBEDDINGS = "embeddings.safetensors"
ADAPTER = "adapter_model.safetensors"  # a PEFT adapter's weights


def register_adaptation(name: str, options: type | None = None, description: str | None = None):
    """Register a :class:`Method` subclass as ``name`` with its options dataclass (default: the class's own)."""
    def deco(cls):
        cls.name = name
        if options is not None:
            cls.options = options
        if description is not None:
            cls.description = description
        return ADAPTATIONS.add(name, cls)

    return deco


def available_methods() -> dict[str, type]:
    return ADAPTATIONS.all()


def get_method(name: str, options: dict | None = None):
    """An instance of method ``name`` configured with ``options`` (unknown keys and wrong types raise)."""
    return ADAPTATIONS.get(name)(ADAPTATIONS.options(name, options))


def parse_methods(spec: str | list[str]) -> list[str]:
    return ADAPTATIONS.parse(spec, "methods")


class Method:
    """Base class. ``full`` semantics unless overridden: stage 2 trains every parameter.

    ``options`` (class attribute) is the method's options dataclass; an instance holds its built options in
    ``config`` (as peft's models hold their ``LoraConfig``)."""

    name = "base"
    description = ""
    options: type = NoOptions

    def __init__(self, config=None):
        self.config = config if config is not None else self.options()

    @classmethod
    def config_from(cls, values: dict | None):
        """Options from a saved ``xlt_method.json`` (or any dict), checked like ``-M`` options."""
        from xlt.options import build

        return build(cls.options, values, f"adaptation method {cls.name}")

    # -- hooks used by the Trainer -------------------------------------------------------------
    def prepare(self, model):
        """Attach the method's modules before training. Returns the model to train. Unless
        :meth:`preserves_outputs` says otherwise, the prepared model gives exactly the logits of ``model``."""
        return model

    def preserves_outputs(self) -> bool:
        """Does :meth:`prepare` leave the logits unchanged (bit for bit)? The contract tests hold a method to it."""
        return True

    def stage2_parameters(self, model) -> list[torch.nn.Parameter] | None:
        """Parameters trained in stage 2 (None: all of them)."""
        return None

    # -- training ------------------------------------------------------------------------------
    def train(self, model, blocks, cfg, work: Path, evaluate: Callable, show_progress: bool, label: str,
              interrupt_at: int | None):
        """Train stage 1 + stage 2; returns ``(model, history)``."""
        from xlt.adapt.train import Trainer

        trainer = Trainer(model, blocks, cfg, work / "checkpoints", eval_fn=evaluate, show_progress=show_progress,
                          label=label, method=None if type(self).stage2_parameters is Method.stage2_parameters else self)
        history = trainer.train(interrupt_at=interrupt_at)
        return trainer.accelerator.unwrap_model(trainer.model), history

    def trainable_parameters(self, model) -> int:
        ps = self.stage2_parameters(model)
        return sum(p.numel() for p in (ps if ps is not None else model.parameters()))

    # -- folders -------------------------------------------------------------------------------
    #: True: the folder holds the whole model (a plain HF folder, ``full``). False, for every method that defines
    #: both hooks ``save_weights(self, model, folder) -> dict | None`` (writes its own weights, returns extra
    #: ``xlt_method.json`` entries) and the classmethod ``load_weights(cls, model, folder, meta)`` (puts them onto
    #: the base with the saved embeddings, returns the model to use): the folder then holds only what the method
    #: trained, the new embeddings and ``xlt_method.json`` naming the base model. Set for each subclass from the
    #: hooks it defines.
    whole_model = True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        hooks = ("save_weights", "load_weights")
        own = [h for h in hooks if hasattr(cls, h)]
        if len(own) == 1:
            missing = (set(hooks) - set(own)).pop()
            raise TypeError(f"adaptation method {cls.__name__} implements {own[0]} but not {missing}: implement both "
                            "(its own weights on a base model) or neither (a whole-model folder)")
        cls.whole_model = not own

    def save(self, model, folder: Path, base_folder: str | None, fingerprint: str | None) -> None:
        """Write ``model`` to ``folder`` so that :func:`load_adapted` gives the same logits. Methods that keep no copy
        of the base implement ``save_weights`` only; the embeddings (unless ``save_weights`` returns
        ``{"embeddings": FILE}``: they are in its own file, e.g. a PEFT adapter) and the metadata are written here.
        ``base_folder`` (the source as the user gave it: a prepared model's name or a folder) is recorded by its
        :func:`portable_base_name`."""
        folder = Path(folder)
        if self.whole_model:
            model.save_pretrained(folder)
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = portable_base_name(base_folder)
        with _named_base(model, name):  # what PEFT writes (adapter_config.json, its card) names the base portably
            extra = self.save_weights(model, folder) or {}
        if not extra.get("embeddings"):
            save_embeddings(model, folder / EMBEDDINGS)
            extra["embeddings"] = EMBEDDINGS
        write_meta(folder, self.name, name, fingerprint, as_dict(self.config), **extra)

    @classmethod
    def load(cls, folder: Path, meta: dict, base=None):
        """What :meth:`save` wrote: the whole model, or the base model (checked against the fingerprint) with the
        saved embeddings, on which ``load_weights`` puts the method's weights back."""
        folder = Path(folder)
        if cls.whole_model:
            from xlt.models import load_model

            return load_model(folder)
        model = load_base(meta, folder, base)
        load_embeddings(model, folder / meta.get("embeddings", EMBEDDINGS))
        return cls.load_weights(model, folder, meta).eval()

    @classmethod
    def export_model(cls, model):
        """What ``xlt export`` writes: ``model`` (as :meth:`load` returned it) as a plain transformers model of its
        standard architecture, with no PEFT or xlt module left, giving the same logits. Default: a whole model is
        returned as is; a PEFT-wrapped one is merged (``merge_and_unload``: LoRA-style updates folded into the
        weights, saved embedding copies put in place). A method whose modules cannot be written as the standard
        architecture overrides this and raises one :class:`XltError` that says why and what to use instead."""
        if hasattr(model, "merge_and_unload"):
            return model.merge_and_unload()
        return model


# -- base-model fingerprints and embeddings ---------------------------------------------------------
def body_parameters(model) -> dict[str, torch.Tensor]:
    """Every tensor of the model except the input/output embeddings (which vocabulary transfer replaces)."""
    base = getattr(model, "get_base_model", lambda: model)()
    emb = {id(p) for p in arch.embedding_parameters(base)}
    return {n: p for n, p in base.named_parameters() if id(p) not in emb}


def fingerprint(model) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of the body tensors (embeddings excluded)."""
    h = hashlib.sha256()
    for n, p in sorted(body_parameters(model).items()):
        t = p.detach().cpu().contiguous()
        h.update(f"{n}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_embeddings(model, path: Path) -> None:
    """The input embedding matrix (and an untied head) by parameter name; the metadata names the input one."""
    from safetensors.torch import save_file

    base = getattr(model, "get_base_model", lambda: model)()
    emb = arch.embedding_parameters(base)
    names = {id(p): n for n, p in base.named_parameters()}
    save_file({names[id(p)]: p.detach().cpu().contiguous() for p in emb}, str(path),
              metadata={"tied": str(arch.is_tied(base)), "input": names[id(emb[0])]})


def load_embeddings(model, path: Path) -> None:
    """Resize ``model`` to the saved vocabulary (:func:`xlt.arch.resize_vocabulary`) and copy the saved rows in.

    ``path``: an ``embeddings.safetensors`` (tensors by parameter name) or a PEFT adapter file saved with the
    embedding layers (:func:`save_peft_adapter`: the same names under PEFT's ``base_model.model.`` prefix)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise XltError(f"{path} does not exist: the folder holds no embeddings",
                       "give a complete folder written by xlt adapt (or Method.save)")
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata() or {}
        base = getattr(model, "get_base_model", lambda: model)()
        names = {id(p): n for n, p in base.named_parameters()}
        emb_names = [names[id(p)] for p in arch.embedding_parameters(base)]
        if meta.get("input"):  # embeddings.safetensors: keys are the base's parameter names
            prefix, emb_name = "", meta["input"]
        else:  # a PEFT adapter: the base's names under the PeftModel's prefix
            prefix = next((p for p in ("", "base_model.model.", "base_model.") if p + emb_names[0] in keys), None)
            if prefix is None:
                raise XltError(f"{path} holds no input embeddings ({emb_names[0]})",
                               "give a folder written by xlt adapt (its adapter carries the new vocabulary)")
            emb_name = emb_names[0]
            keys = [k for k in keys if k.startswith(prefix) and k[len(prefix):] in emb_names]
        if prefix + emb_name not in keys:
            raise XltError(f"{path} holds no input embeddings ({emb_name})", "give an embeddings file written by xlt")
        tensors = {k[len(prefix):]: f.get_tensor(k) for k in keys}
    vocab = tensors[emb_name].shape[0]
    if base.get_input_embeddings().weight.shape[0] != vocab:
        arch.resize_vocabulary(base, vocab)
    params = dict(base.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for n, t in tensors.items():
            if n not in params:
                raise XltError(f"{path} holds {n}, which the base model does not have", "load it on the base it was trained on")
            params[n].copy_(t)


def adapter_dir(folder: str | Path, adapter_name: str = "default") -> Path:
    """Where PEFT's ``save_pretrained`` puts adapter ``adapter_name`` of ``folder``: the folder itself for
    ``default``, a subfolder of the adapter's name otherwise."""
    return Path(folder) if adapter_name == "default" else Path(folder) / adapter_name


def save_peft_adapter(model, folder: Path, adapter_name: str = "default") -> dict:
    """Save the PeftModel ``model`` as a standard PEFT adapter that carries the new vocabulary: PEFT's
    ``save_embedding_layers=True`` puts the input embeddings (and the head) into ``adapter_model.safetensors``, so
    ``base.resize_token_embeddings(len(tok))`` + ``PeftModel.from_pretrained(base, folder)`` overwrites every
    resized row. Returns the ``xlt_method.json`` entry naming that file (for :meth:`Method.save`)."""
    model.save_pretrained(str(folder), selected_adapters=[adapter_name], save_embedding_layers=True)
    return {"embeddings": (adapter_dir(folder, adapter_name) / ADAPTER).relative_to(folder).as_posix()}


def write_meta(folder: Path, method: str, base_folder: str | None, fp: str | None, options: dict, **extra) -> None:
    """``xlt_method.json``: the method, its options, the base model (by :func:`portable_base_name`) and fingerprint."""
    from xlt.util import write_json_atomic

    write_json_atomic(folder / META, {"method": method, "base_model": portable_base_name(base_folder),
                                      "base_fingerprint": fp, "options": options, **extra})


# -- the base model's portable name -------------------------------------------------------------------
def portable_base_name(base: str | os.PathLike | None) -> str | None:
    """How a folder names its base model so the name holds on another machine: a prepared model (``smollm2``, or its
    folder in the xlt cache) by its name, a relative folder as the user gave it, an absolute one by its last part
    (:func:`xlt.util.portable_path`). :func:`resolve_base` finds the folder again."""
    if base is None or str(base) == "":
        return None
    from xlt.util import portable_path

    return portable_path(base)


def resolve_base(name: str, folder: Path) -> Path:
    """The model folder a saved ``base_model`` name stands for: a prepared model's name (prepared into the xlt cache
    on first use), ``$XLT_CACHE/...``, an existing folder (as given, or relative to the working folder), else a
    folder of that name beside ``folder`` or beside one of its parent folders (the nearest). Raises one
    :class:`XltError` saying to pass ``base=`` when none is found."""
    from xlt.models import KNOWN_SOURCES, resolve_source
    from xlt.util import cache_dir

    fix = (f"pass the base model: load_adapted({str(folder)!r}, base=<the source model folder or a loaded model>) "
           "(the same source that xlt adapt was given)")
    head, _, rest = name.partition("/")
    if head in KNOWN_SOURCES:
        try:
            path = resolve_source(head)
        except XltError as e:
            raise XltError(f"{folder} adapts the prepared model {head!r}, which cannot be prepared here: {e.problem}",
                           f"{e.fix}; or {fix}") from None
        return path / rest if rest else path
    path = cache_dir() / rest if head == "$XLT_CACHE" else Path(name).expanduser()
    if path.is_absolute():  # $XLT_CACHE/..., or a folder written by an older xlt version
        if path.is_dir():
            return path
    elif (path / "config.json").is_file():
        return path
    else:
        for parent in Path(folder).resolve().parents:
            if (parent / name / "config.json").is_file():
                return parent / name
    raise XltError(f"{folder} adapts the base model {name!r}, which is not a prepared model name and not a folder "
                   f"found here or beside {Path(folder).name}", fix)


@contextlib.contextmanager
def _named_base(model, name: str | None):
    """While saving: the base model and every PEFT config of ``model`` name the base as ``name`` (PEFT copies it into
    ``adapter_config.json`` and its README), never the absolute folder the model was loaded from."""
    base = getattr(model, "get_base_model", lambda: model)()
    undo = []

    def put(obj, attr, value):
        undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    cfg = getattr(base, "config", None)
    if cfg is not None and hasattr(cfg, "_name_or_path"):
        put(cfg, "_name_or_path", name or "")
    if "name_or_path" in vars(base):
        put(base, "name_or_path", name or "")
    for c in getattr(model, "peft_config", {}).values():
        put(c, "base_model_name_or_path", name)
    try:
        yield
    finally:
        for obj, attr, value in reversed(undo):
            setattr(obj, attr, value)


def load_base(meta: dict, folder: Path, base=None):
    """The base model named in ``meta`` (found by :func:`resolve_base`), or ``base`` (a folder, a prepared model's
    name, or a loaded model), checked against the fingerprint: a different base raises, saying which."""
    from xlt.models import KNOWN_SOURCES, load_model, resolve_source

    folder = Path(folder)
    if base is None:
        if not meta.get("base_model"):
            raise XltError(f"{folder} does not say which base model it adapts",
                           "pass base=<the source model folder> (the same source that xlt adapt was given)")
        what = meta["base_model"]
        model = load_model(resolve_base(what, folder))
    elif isinstance(base, (str, os.PathLike)):
        what = str(base)
        model = load_model(resolve_source(base) if what in KNOWN_SOURCES else base)
    else:
        what, model = "the model given as base", base
    fp = fingerprint(model)
    if meta.get("base_fingerprint") and fp != meta["base_fingerprint"]:
        raise XltError(f"{folder} was trained on a base model ({meta.get('base_model') or 'unnamed'}) whose weights "
                       f"hash to {meta['base_fingerprint'][:12]}…, but {what} hashes to {fp[:12]}…",
                       "load it on the exact base model it was trained on (the source model of the xlt adapt run): "
                       "pass base=<that model folder>")
    return model


def load_adapted(folder: str | Path, base=None):
    """Load what :meth:`Method.save` wrote: a plain HF folder (``full``) or a method folder on its base model.

    ``base``: the base model (a folder, a prepared model's name, or a loaded model) when the folder's own
    ``base_model`` name cannot be found here (:func:`resolve_base`); it must be the model the folder was trained on
    (fingerprint). Folders of older xlt versions (an absolute base folder, ``embeddings.safetensors``) load too."""
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.is_file():
        from xlt.models import load_model

        return load_model(folder)
    meta = json.loads(meta_path.read_text())
    cls = available_methods().get(meta["method"])
    if cls is None:
        raise XltError(f"{folder} was saved by method {meta['method']!r}, which is not installed",
                       f"installed methods: {', '.join(sorted(available_methods()))}")
    return cls.load(folder, meta, base)
