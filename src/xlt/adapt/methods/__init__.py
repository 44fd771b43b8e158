"""Second-stage adaptation methods (``xlt adapt --method``); the contract is in :mod:`xlt.adapt.methods.base`.

The built-in methods (``full``, ``lora``, ``sft``, ``mos``, ``recursive``, the unified view and its presets)
register themselves when the registry is first asked (``ADAPTATIONS``). The PEFT-expressible ones (``lora``,
``mos``, ``lora-attn``, ``lora-ffn``, ``prefix``) save standard PEFT adapters that carry the new vocabulary
(:func:`save_peft_adapter`), loadable with plain peft as well as with :func:`load_adapted`.
"""

from xlt.adapt.methods.base import (ADAPTATIONS, ADAPTER, EMBEDDINGS, META, Method, available_methods,
                                    body_parameters, fingerprint, get_method, load_adapted, load_base, load_embeddings,
                                    parse_methods, portable_base_name, register_adaptation, resolve_base,
                                    save_embeddings, save_peft_adapter, write_meta)

__all__ = ["ADAPTATIONS", "ADAPTER", "EMBEDDINGS", "META", "Method", "available_methods", "body_parameters",
           "fingerprint", "get_method", "load_adapted", "load_base", "load_embeddings", "parse_methods",
           "portable_base_name", "register_adaptation", "resolve_base", "save_embeddings", "save_peft_adapter",
           "write_meta"]
