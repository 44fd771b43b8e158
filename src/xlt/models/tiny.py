"""Tiny random causal LMs for tests: Llama- and GPT-2-style, tied or untied embeddings."""

from __future__ import annotations


def tiny_model(arch: str = "llama", vocab_size: int = 256, hidden: int = 64, layers: int = 2, heads: int = 4,
               tied: bool = True, seed: int = 0, max_positions: int = 512, **special_ids):
    """A randomly initialised ``*ForCausalLM`` with the given shape (deterministic for ``seed``)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=max_positions, tie_word_embeddings=tied, **special_ids)
        model = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                         n_positions=max_positions, tie_word_embeddings=tied, **special_ids)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r} (llama, gpt2)")
    if not tied:  # give the head its own values so tied/untied paths are distinguishable
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0, 0.02)
    return model.eval()
