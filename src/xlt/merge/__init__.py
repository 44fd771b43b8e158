"""``xlt.merge``: a streaming merge engine for composing language and task skills.

``run(config, out)`` merges the models a YAML config describes (a documented subset of mergekit's format,
see :mod:`xlt.merge.config`) with one of the methods registered in :data:`MERGES` (``xlt merges`` lists them
with their options; third parties add more through the ``xlt.merges`` entry-point group and
:func:`register_merge`), reading inputs tensor by tensor from memory-mapped safetensors (or LoRA adapters as
lazy ΔW = (α/r)·B·A) and writing sharded safetensors as it goes. ``plan(config)`` runs every check without
writing anything; ``merge_tensors`` applies a method to tensors in memory.
"""

from xlt.merge.config import MergeConfig, load_config
from xlt.merge.engine import run
from xlt.merge.execute import MergeResult, merge_tensors
from xlt.merge.planner import Plan, PlanParts, plan
from xlt.merge.registry import MERGES, Context, MergeMethod, StatStage, register_merge

__all__ = ["run", "plan", "load_config", "merge_tensors", "MergeConfig", "MergeResult", "Plan", "PlanParts",
           "MergeMethod", "StatStage", "Context", "MERGES", "register_merge"]
