"""Zero-shot transfer by swapping the language adapter (MAD-X style, LoRA adapters on PEFT).

1. Train a language adapter ``lang/en`` on English text and ``lang/sw`` on Swahili text (causal LM).
2. Train a task adapter ``task/x`` on English task data, stacked on the frozen ``lang/en``.
3. At inference swap ``lang/en`` for ``lang/sw`` under the same task adapter, and build the exact
   composite ``task/x@sw`` (one adapter, for per-language serving).

Runs on any causal LM (``--model``: a local HF folder or a prepared name such as ``smollm2``, which
``xlt models prepare smollm2`` converts once into the cache) and any text files; with no arguments it builds a
tiny random Llama and two synthetic "languages" so it finishes in seconds on a CPU. The "task" here is a toy one
(copying a pattern) so the numbers only show the mechanics; the calls are the ones a real run makes.

    .venv/bin/python examples/adapter_swap.py
    .venv/bin/python examples/adapter_swap.py --model smollm2 --en en.txt --sw sw.txt --task task_en.txt
"""

from __future__ import annotations

import argparse
import random

import torch


def synthetic(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    syl = ["ka", "li", "mu", "na", "to", "we"] if seed % 2 else ["the", "of", "and", "to", "in", "is"]
    return [" ".join(rng.choice(syl) + rng.choice(syl) for _ in range(rng.randint(4, 10))) for _ in range(n)]


def batches(tok, texts, seq_len=32, bs=8, seed=0):
    ids = [i for t in texts for i in tok(t + "\n")["input_ids"]]
    n = len(ids) // seq_len
    data = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    g = torch.Generator().manual_seed(seed)
    while True:
        yield data[torch.randint(0, n, (bs,), generator=g)]


def train(pm, tok, texts, steps, lr=1e-2):
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    pm.train()
    it = batches(tok, texts)
    for _ in range(steps):
        b = next(it)
        pm(input_ids=b, labels=b).loss.backward()
        opt.step()
        opt.zero_grad()
    pm.eval()


@torch.no_grad()
def loss(pm, tok, texts):
    b = next(batches(tok, texts, bs=16, seed=1))
    return pm(input_ids=b, labels=b).loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="causal LM: a local HF folder or a prepared name (smollm2, gemma3) "
                                    "[default: a tiny random Llama]")
    ap.add_argument("--en"), ap.add_argument("--sw"), ap.add_argument("--task")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--r", type=int, default=4)
    a = ap.parse_args()
    from peft import LoraConfig, get_peft_model

    from xlt.adapt.compose import exact_composite, stack_lora

    torch.manual_seed(0)
    read = lambda p, seed: open(p, encoding="utf-8").read().splitlines() if p else synthetic(seed, 300)  # noqa: E731
    en, sw = read(a.en, 2), read(a.sw, 1)
    task = read(a.task, 4) if a.task else [t + " => " + t.split()[0] for t in synthetic(2, 300)]
    if a.model:
        from xlt.models import load_model, load_tokenizer, resolve_source

        folder = resolve_source(a.model)
        model, tok = load_model(folder), load_tokenizer(folder)
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        from xlt.models import tiny_model

        t = Tokenizer(models.BPE(unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.train_from_iterator(en + sw + task, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"],
                                                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>")
        model = tiny_model("llama", vocab_size=len(tok), hidden=64, layers=2)
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = LoraConfig(r=a.r, lora_alpha=2 * a.r, target_modules="all-linear")
    pm = get_peft_model(model, cfg, adapter_name="lang/en")
    pm.add_adapter("lang/sw", cfg)
    pm.add_adapter("task/x", cfg)
    print(f"before: loss on sw {loss(pm, tok, sw):.3f}")
    for lang, texts in (("lang/en", en), ("lang/sw", sw)):  # 1. language adapters, one at a time
        stack_lora(pm, [lang], trainable=[lang])
        train(pm, tok, texts, a.steps)
        print(f"{lang} trained: loss on its language {loss(pm, tok, texts):.3f}")
    stack_lora(pm, ["lang/en", "task/x"], trainable=["task/x"])  # 2. task adapter on the frozen English adapter
    train(pm, tok, task, a.steps)
    print(f"Stack(lang/en, task/x): task loss {loss(pm, tok, task):.3f}, sw loss {loss(pm, tok, sw):.3f}")
    stack_lora(pm, ["lang/sw", "task/x"])  # 3. zero-shot: swap the language adapter
    print(f"Stack(lang/sw, task/x): task loss {loss(pm, tok, task):.3f}, sw loss {loss(pm, tok, sw):.3f}")
    swapped = loss(pm, tok, sw)
    exact_composite(pm, ["lang/sw", "task/x"], "task/x@sw")  # one adapter for serving Swahili
    pm.base_model.set_adapter("task/x@sw")
    print(f"composite task/x@sw: sw loss {loss(pm, tok, sw):.3f} (stack: {swapped:.3f}; equal up to float rounding)")


if __name__ == "__main__":
    main()
