"""Data preparation: romanisation (uroman) of corpora, and the ``xlt data`` builders.

Every registered builder is also a function here with the command's name and defaults:
``xlt.data.codeswitch("cs.jsonl", corpus="bible", src="eng", tgt="swh", ratio=0.3, seed=0)`` is
``xlt data codeswitch --corpus bible --src eng --tgt swh --ratio 0.3 --out cs.jsonl`` (it returns the manifest).
"""

from xlt.data.romanize import RomanizedCorpus, romanize_texts

__all__ = ["RomanizedCorpus", "romanize_texts", "builders_list"]


def builders_list() -> list[str]:
    """The names of the registered data builders."""
    from xlt.data.registry import BUILDERS

    return BUILDERS.names()


def __getattr__(name: str):
    """``xlt.data.NAME(out, **options)`` runs builder NAME (see :func:`xlt.data.engine.run_builder`)."""
    if name.startswith("_"):
        raise AttributeError(name)
    from xlt.data.registry import BUILDERS

    key = name.replace("_", "-") if name.replace("_", "-") in BUILDERS.all() else name
    if key not in BUILDERS.all():
        raise AttributeError(f"module 'xlt.data' has no attribute {name!r}")
    from functools import partial

    from xlt.data.engine import run_builder

    fn = partial(run_builder, key)
    fn.__doc__ = f"{BUILDERS.get(key).description}. Runs `xlt data {key}`: run_builder({key!r}, out, **options)."
    return fn
