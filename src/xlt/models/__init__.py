"""Models: load source models from local folders, prepare packaged models, tiny models for tests."""

from xlt.models.loading import KNOWN_SOURCES, check_model_folder, load_model, load_source, load_tokenizer, resolve_source
from xlt.models.prepare import PREPARERS, prepare, prepared_path
from xlt.models.tiny import tiny_model

__all__ = ["KNOWN_SOURCES", "PREPARERS", "check_model_folder", "load_model", "load_source", "load_tokenizer",
           "prepare", "prepared_path", "resolve_source", "tiny_model"]
