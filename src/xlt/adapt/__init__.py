"""Adaptation: continued training of a transferred model, and the ``xlt adapt`` pipeline (:func:`run`)."""

from xlt.adapt.data import PackedBlocks, pack_stream
from xlt.adapt.pipeline import AdaptSettings, RunResult, run, steps_to_reach
from xlt.adapt.train import TrainConfig, Trainer, TrainingInterrupted, embedding_parameters

__all__ = ["AdaptSettings", "PackedBlocks", "RunResult", "TrainConfig", "Trainer", "TrainingInterrupted",
           "embedding_parameters", "pack_stream", "run", "steps_to_reach"]
