"""Built-in merge methods, one module each; importing this package registers them."""

from xlt.merge.methods import (  # noqa: F401
    dare,
    layer_swap,
    linear,
    passthrough,
    pcb,
    slerp,
    task_arithmetic,
    ties,
    widen,
)
