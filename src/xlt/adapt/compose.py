"""Language/task adapter composition (MAD-X style).

Two paths:

- **LoRA** (PEFT, default): adapters ``lang/<code>`` and ``task/<name>`` in one ``PeftModel``;
  :func:`stack_lora` activates several at once (for LoRA, stacking = adding the deltas),
  :func:`exact_composite` builds one adapter equal to the stack (PEFT ``cat``: factors concatenated,
  rank = Σ rᵢ, exact), e.g. ``task/ner@sw`` for per-language serving; :func:`load_lora_stack` loads xlt
  LoRA folders onto one base and refuses folders trained on different base models.
- **Bottleneck + invertible** (faithful MAD-X, our own small modules attached with hooks, no
  transformers-version pin): :class:`~xlt.adapt.adapters.Bottleneck` (Pfeiffer placement after each layer's FFN,
  ``h + W_up ReLU(W_down h)``, zero-initialised up-projection), :class:`~xlt.adapt.adapters.InvertibleAdapter`
  (NICE additive coupling on the embedding output, exactly inverted before the output head) and
  :class:`AdapterStack` with :class:`Stack` composition; a name that is not there raises (``adapters`` silently
  skips it). Layers and FFNs are found through :mod:`xlt.arch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xlt import arch
from xlt.adapt.adapters import Bottleneck, InvertibleAdapter, output_hook
from xlt.errors import XltError

# ------------------------------------------------------------------------------------------------
# LoRA stacks on PEFT
# ------------------------------------------------------------------------------------------------


def _check_names(peft_model, names: list[str]) -> None:
    have = sorted(peft_model.peft_config)
    missing = [n for n in names if n not in peft_model.peft_config]
    if missing:
        raise XltError(f"adapter(s) {missing} are not loaded", f"loaded adapters: {', '.join(have)}")


def stack_lora(peft_model, names: list[str], trainable: list[str] | None = None) -> None:
    """Activate the LoRA adapters ``names`` together (their deltas add); only ``trainable`` get gradients."""
    from peft.functional import set_requires_grad

    _check_names(peft_model, names)
    peft_model.base_model.set_adapter(list(names))
    for n in names:  # set_adapter makes every active adapter trainable; freeze all but ``trainable``
        set_requires_grad(peft_model, n, n in (trainable or []))


def exact_composite(peft_model, names: list[str], new_name: str, weights: list[float] | None = None) -> str:
    """One LoRA adapter equal to the stack of ``names`` (weighted by ``weights``), by factor concatenation."""
    _check_names(peft_model, names)
    for n in names:
        c = peft_model.peft_config[n]
        if getattr(c, "use_rslora", False) or getattr(c, "use_dora", False) or getattr(c, "lora_bias", False):
            raise XltError(f"adapter {n} uses rsLoRA, DoRA or a LoRA bias, which PEFT's add_weighted_adapter combines "
                           "wrongly (huggingface/peft#3761)", "compose plain LoRA adapters, or keep them as a stack")
    peft_model.add_weighted_adapter(list(names), list(weights or [1.0] * len(names)), new_name, combination_type="cat")
    return new_name


def load_lora_stack(folders: list[str | Path], base=None):
    """Load several xlt LoRA folders (from ``xlt adapt --method lora`` or :meth:`Lora.save`) onto one base model.

    The folders must share the base model (same fingerprint); the first folder's embeddings are used.
    Adapters are named by their folder name unless their ``xlt_method.json`` gives ``adapter_name``.
    """
    from peft import PeftModel

    from xlt.adapt.methods.base import EMBEDDINGS, META, adapter_dir, load_base, load_embeddings

    metas = []
    for f in map(Path, folders):
        if not (f / META).is_file():
            raise XltError(f"{f} is not an xlt adapter folder (no {META})", "give folders written by xlt")
        metas.append(json.loads((f / META).read_text()))
    fps = {m.get("base_fingerprint") for m in metas}
    if len(fps) > 1:
        raise XltError("the adapters were trained on different base models (their base fingerprints differ: "
                       + ", ".join(f"{Path(f).name}: {(m.get('base_fingerprint') or '?')[:12]}" for f, m in zip(folders, metas)) + ")",
                       "stack adapters trained on the same base model")
    first = Path(folders[0])
    model = load_base(metas[0], first, base)
    first_emb = first / metas[0].get("embeddings", EMBEDDINGS)
    if first_emb.is_file():
        load_embeddings(model, first_emb)
    pm = None
    names = []
    for f, m in zip(map(Path, folders), metas):
        name = m["options"].get("adapter_name") or f.name
        name = f.name if name == "default" else name
        sub = adapter_dir(f, m["options"].get("adapter_name", "default"))
        if pm is None:
            pm = PeftModel.from_pretrained(model, str(sub), adapter_name=name)
        else:  # an adapter of another vocabulary size (e.g. a task adapter trained on the source): its rows are skipped
            pm.load_adapter(str(sub), adapter_name=name, ignore_mismatched_sizes=True)
        names.append(name)
    if first_emb.is_file():  # loading an adapter also put in the vocabulary it carries: the first folder's is used
        load_embeddings(pm, first_emb)
    stack_lora(pm, names)
    return pm.eval()


# ------------------------------------------------------------------------------------------------
# Bottleneck and invertible adapters (hooks)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """Apply adapters in order: ``Stack("lang/sw", "task/ner")`` (language first, as in MAD-X)."""

    names: tuple

    def __init__(self, *names: str):
        object.__setattr__(self, "names", tuple(names))


class AdapterStack(nn.Module):
    """Named MAD-X adapters on a causal LM or a BERT-style encoder (a model without an output head: the invertible
    adapter's inverse is then not applied; e.g. :class:`xlt.tasks.colbert_xm.LanguageModularEncoder`): per name, one bottleneck adapter per layer (after the FFN output) and,
    with ``invertible=True`` (language adapters), an invertible adapter on the embeddings. Hooks apply the
    active :class:`Stack`; the base model's weights are untouched."""

    def __init__(self, model, hidden_size: int | None = None):
        super().__init__()
        self.n_layers = len(arch.layers(model))
        self.d = hidden_size or model.config.hidden_size
        self.adapters = nn.ModuleDict()
        self.configs: dict[str, dict] = {}
        self.active: Stack = Stack()
        self._handles = []
        self._attach(model)

    @staticmethod
    def _key(name: str) -> str:
        return name.replace("/", "__")  # ModuleDict keys cannot hold dots; keep names readable

    def add(self, name: str, reduction: int = 16, invertible: bool = False, inv_reduction: int = 2, seed: int = 0):
        if name in self.configs:
            raise XltError(f"adapter {name!r} exists already", "choose another name or delete it first")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            size = max(1, self.d // reduction)
            mods = nn.ModuleDict({"layers": nn.ModuleList(Bottleneck(self.d, size) for _ in range(self.n_layers))})
            if invertible:
                mods["inv"] = InvertibleAdapter(self.d, inv_reduction)
        self.adapters[self._key(name)] = mods
        self.configs[name] = {"reduction": reduction, "invertible": invertible, "inv_reduction": inv_reduction}
        return mods

    def set_active(self, stack: Stack | str | None) -> None:
        stack = Stack() if stack is None else (Stack(stack) if isinstance(stack, str) else stack)
        missing = [n for n in stack.names if n not in self.configs]
        if missing:
            raise XltError(f"adapter(s) {missing} are not in the stack", f"adapters present: {', '.join(sorted(self.configs)) or 'none'}")
        self.active = stack

    def parameters_of(self, name: str):
        return list(self.adapters[self._key(name)].parameters())

    def _inv(self):
        for n in self.active.names:  # the first active adapter that has one (the language adapter)
            mods = self.adapters[self._key(n)]
            if "inv" in mods:
                return mods["inv"]
        return None

    def _attach(self, model) -> None:
        base = getattr(model, "get_base_model", lambda: model)()

        def after_ffn(i):
            def add(h, x):
                for n in self.active.names:
                    h = h + self.adapters[self._key(n)]["layers"][i](h)
                return h
            return output_hook(add)

        def after_embed(module, args, out):
            inv = self._inv()
            return out if inv is None else inv(out)

        def before_head(module, args):
            inv = self._inv()
            return args if inv is None else (inv.inverse(args[0]), *args[1:])

        for i, layer in enumerate(arch.layers(model)):
            self._handles.append(arch.ffn(layer, model).register_forward_hook(after_ffn(i), with_kwargs=True))
        self._handles.append(base.get_input_embeddings().register_forward_hook(after_embed))
        head = base.get_output_embeddings()
        if head is not None:  # an encoder without an output head (BERT-style, e.g. ColBERT-XM): no inverse to apply
            self._handles.append(head.register_forward_pre_hook(before_head))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def save(self, folder: str | Path, names: list[str] | None = None) -> None:
        from safetensors.torch import save_file

        from xlt.util import atomic_dir, write_json_atomic

        names = names or sorted(self.configs)
        with atomic_dir(folder, overwrite=True) as tmp:
            for n in names:
                sd = {k: v.detach().contiguous() for k, v in self.adapters[self._key(n)].state_dict().items()}
                sub = tmp / n
                sub.mkdir(parents=True)
                save_file(sd, str(sub / "adapter.safetensors"))
                write_json_atomic(sub / "adapter_config.json", {"type": "xlt-bottleneck", **self.configs[n]})

    def load(self, folder: str | Path, name: str) -> None:
        from safetensors.torch import load_file

        sub = Path(folder) / name
        cfg = json.loads((sub / "adapter_config.json").read_text())
        mods = self.add(name, cfg["reduction"], cfg["invertible"], cfg["inv_reduction"])
        mods.load_state_dict(load_file(str(sub / "adapter.safetensors")))


__all__ = ["AdapterStack", "Bottleneck", "InvertibleAdapter", "Stack", "exact_composite", "load_lora_stack",
           "stack_lora"]
