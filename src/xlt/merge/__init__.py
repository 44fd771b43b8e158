"""``xlt.merge``: a streaming merge engine for composing language and task skills.

``run(config, out)`` merges the models a YAML config describes (a documented subset of mergekit's format,
see :mod:`xlt.merge.config`) with one of the registered methods — ``linear``, ``task_arithmetic``,
``ties``, ``dare_linear``, ``dare_ties``, ``pcb``, ``widen``, ``layer_swap``, ``slerp``, ``passthrough``
(:func:`available_methods`; third parties add more through the ``xlt.merges`` entry-point group) —
reading inputs tensor by tensor from memory-mapped safetensors (or LoRA adapters as lazy ΔW = (α/r)·B·A)
and writing sharded safetensors as it goes. ``plan(config)`` runs every check without writing anything.
"""

from xlt.merge.config import MergeConfig, load_config
from xlt.merge.engine import MergeResult, Plan, plan, run
from xlt.merge.registry import (Context, MergeMethod, Param, StatStage, available_methods, get_method,
                                register_method)

__all__ = ["run", "plan", "load_config", "MergeConfig", "MergeResult", "Plan", "MergeMethod", "Param",
           "StatStage", "Context", "register_method", "available_methods", "get_method"]
