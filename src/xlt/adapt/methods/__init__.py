"""Second-stage adaptation methods (``xlt adapt --method``); the contract is in :mod:`xlt.adapt.methods.base`.

The built-in methods (``full``, ``lora``, ``sft``, ``mos``, ``recursive``, the unified view and its presets)
register themselves when the registry is first asked (``ADAPTATIONS``).
"""

from xlt.adapt.methods.base import (ADAPTATIONS, EMBEDDINGS, META, Method, available_methods, body_parameters,
                                    fingerprint, get_method, load_adapted, load_base, load_embeddings, parse_methods,
                                    register_adaptation, save_embeddings, write_meta)

__all__ = ["ADAPTATIONS", "EMBEDDINGS", "META", "Method", "available_methods", "body_parameters", "fingerprint",
           "get_method", "load_adapted", "load_base", "load_embeddings", "parse_methods", "register_adaptation",
           "save_embeddings", "write_meta"]
