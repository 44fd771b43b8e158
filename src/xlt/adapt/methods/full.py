"""``full``: stage 2 trains every parameter (what ``xlt adapt`` always did); saved as a plain HF model folder."""

from __future__ import annotations

from xlt.adapt.methods.base import Method, register_adaptation


@register_adaptation("full")
class Full(Method):
    description = "full fine-tuning of the whole model in stage 2 (the default)"
