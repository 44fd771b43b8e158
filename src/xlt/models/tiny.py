"""Tiny random models of every family xlt supports, for tests: tied or untied embeddings, deterministic per seed.

Causal LMs: ``llama``, ``gemma3``, ``qwen2``, ``gpt2``, ``mixtral`` and ``olmoe`` (mixtures of experts); and ``bert``
(a masked LM, for the merge engine and analysis). :data:`CAUSAL_FAMILIES` lists the causal ones. :func:`tiny_moe`
builds mixtures of experts of the routing families (:data:`MOE_FAMILIES`) at any shape, for routing analysis.
"""

from __future__ import annotations

CAUSAL_FAMILIES = ("llama", "gemma3", "qwen2", "gpt2", "mixtral", "olmoe")
FAMILIES = CAUSAL_FAMILIES + ("bert",)


def tiny_model(arch: str = "llama", vocab_size: int = 256, hidden: int = 64, layers: int = 2, heads: int = 4,
               tied: bool = True, seed: int = 0, max_positions: int = 512, **special_ids):
    """A randomly initialised model of family ``arch`` with the given shape (deterministic for ``seed``)."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=heads, max_position_embeddings=max_positions, tie_word_embeddings=tied,
                  **special_ids)
    kv = max(1, heads // 2)
    if arch == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(num_key_value_heads=heads, **common))
    elif arch == "gemma3":
        model = T.Gemma3ForCausalLM(T.Gemma3TextConfig(num_key_value_heads=kv, head_dim=hidden // heads,
                                                       sliding_window=32, query_pre_attn_scalar=hidden // heads,
                                                       **common))
    elif arch == "qwen2":
        model = T.Qwen2ForCausalLM(T.Qwen2Config(num_key_value_heads=kv, **common))
    elif arch == "mixtral":
        model = T.MixtralForCausalLM(T.MixtralConfig(num_key_value_heads=kv, num_local_experts=4,
                                                     num_experts_per_tok=2, **common))
    elif arch == "olmoe":
        model = T.OlmoeForCausalLM(T.OlmoeConfig(num_key_value_heads=kv, num_experts=4, num_experts_per_tok=2,
                                                 **common))
    elif arch == "gpt2":
        cfg = T.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                           n_positions=max_positions, tie_word_embeddings=tied, **special_ids)
        model = T.GPT2LMHeadModel(cfg)
    elif arch == "bert":
        cfg = T.BertConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                           num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_positions,
                           tie_word_embeddings=tied, **special_ids)
        model = T.BertForMaskedLM(cfg)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r} ({', '.join(FAMILIES)})")
    if not tied:  # give the head its own values so tied/untied paths are distinguishable
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0, 0.02)
    return model.eval()


#: the mixture-of-experts families :func:`tiny_moe` builds
MOE_FAMILIES = ("olmoe", "mixtral", "qwen2_moe", "qwen3_moe")


def tiny_moe(family: str = "olmoe", vocab_size: int = 256, hidden: int = 64, layers: int = 4, experts: int = 8,
             top_k: int = 2, seed: int = 0, mlp_only_layers: list[int] | None = None, **special):
    """A randomly initialised mixture-of-experts causal LM of ``family`` (:data:`MOE_FAMILIES`), deterministic for
    ``seed``: ``layers`` decoder layers of width ``hidden`` (``hidden // 16`` heads, at least one), ``experts``
    experts per sparse layer of which ``top_k`` route each token. ``mlp_only_layers`` makes those layers dense (Qwen2/3
    -MoE only). ``special`` passes further config keys: special-token ids (unset ones are ``None``, so no default id
    points outside the vocabulary), ``norm_topk_prob``, ``decoder_sparse_step``, ``tie_word_embeddings``."""
    import torch
    import transformers as T

    if family not in MOE_FAMILIES:
        raise ValueError(f"unknown tiny MoE family {family!r} ({', '.join(MOE_FAMILIES)})")
    if mlp_only_layers and family not in ("qwen2_moe", "qwen3_moe"):
        raise ValueError(f"{family} has no dense layers (mlp_only_layers is a Qwen2/3-MoE setting)")
    if not 1 <= top_k <= experts:
        raise ValueError(f"top_k must be between 1 and the number of experts ({experts}), not {top_k}")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        special.setdefault(key, None)
    torch.manual_seed(seed)
    heads = max(1, hidden // 16)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, num_experts_per_tok=top_k, **special)
    if family == "olmoe":
        model = T.OlmoeForCausalLM(T.OlmoeConfig(num_experts=experts, **common))
    elif family == "mixtral":
        model = T.MixtralForCausalLM(T.MixtralConfig(num_local_experts=experts, **common))
    elif family == "qwen2_moe":
        model = T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(num_experts=experts, moe_intermediate_size=hidden,
                                                       shared_expert_intermediate_size=hidden,
                                                       mlp_only_layers=list(mlp_only_layers or []), **common))
    else:
        model = T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(num_experts=experts, moe_intermediate_size=hidden,
                                                       mlp_only_layers=list(mlp_only_layers or []), **common))
    return model.eval()
