"""Evaluation: bits per byte (tokenizer-independent), fertility and premium, greedy samples."""

from xlt.eval.bpb import BpbResult, bits_per_byte, boundary_token_id, start_token_ids, truncate_texts
from xlt.eval.generate import greedy_samples, prompts_from
from xlt.eval.tokenization import premium, tokenization_table

__all__ = ["BpbResult", "bits_per_byte", "boundary_token_id", "greedy_samples", "premium", "prompts_from",
           "start_token_ids", "tokenization_table", "truncate_texts"]
