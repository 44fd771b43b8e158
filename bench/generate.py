"""Benchmark: ``xlt generate``'s MBR selection and pool decoding against the usual routes (issue 16).

    python bench/generate.py [--part all|mbr|decode] [--out bench/results/generate.json] [--quick]
                             [--device cpu|cuda] [--threads N] [--cache DIR] [--cache-batch 4]
                             [--cache-budget SECONDS] [--build-cache-only]

Every timed side runs in its own process (so each has its own peak memory, the process's VmHWM, model load
included); wall time is ``time.perf_counter()`` around the work only: models are loaded, inputs read and one
warm-up call made (a two-candidate pool, one ``sentence_chrf``, one forward of the first prompt: the same for both
sides of a comparison) before the clock starts; on CUDA the clock stops after ``torch.cuda.synchronize()``.

Prompts (both parts): the Bible's held-out test verses in English, in corpus order, as the translation prompt
``xlt generate`` builds for SmolLM2-135M-Instruct (:func:`xlt.infer.run.render_prompt`, ``condition=instruction``:
LMT's "Translate the following text from English into Swahili: ..." inside the model's chat template), tokenised
once by :func:`xlt.infer.run.encode_prompt` (as ``xlt generate`` does); both sides of a comparison get these same token ids.

1. **mbr**: 200 pools (``--mbr-pools``) of 64 real SmolLM2 samples per prompt, en→sw at τ = 0.7 (32) and τ = 1.0
   (32), pool ``0.7x32,1.0x32``, at most 48 new tokens, stopping at ``<|im_end|>`` or a newline, candidate = the
   first line (as ``xlt generate``); the pools of 16 are samples 0-7 of each temperature of the same prompts (the
   candidates ``0.7x8,1.0x8`` gives: a row's seed depends only on (seed, verse key, member, sample)). Generated
   once into ``<cache>/bench/generate/mbr-pools-<settings hash>.jsonl`` (``xlt.util.cache_dir()`` or ``--cache``;
   one line per prompt, appended chunk by chunk, so an interrupted build resumes where it stopped; never timed).
   For each pool size:

   - ``xlt``: ``mbr_select_many(pools, utility="chrf")`` (evidence = the pool, ties to index 0 then the lowest).
   - ``sacrebleu``: a double loop of ``sacrebleu.sentence_chrf(c, [e]).score`` over all (candidate, evidence)
     pairs of each pool, the mean per candidate (``np.mean``) and the same argmax and tie rule (scores within 1e-12
     of the best; index 0 if tied, else the lowest tied index), written out here.
   - ``fastchrf_pairwise`` (if ``fastchrf`` imports): ``fastchrf.pairwise_chrf(pools, pools)`` (all pools in one
     batched call; Rust, multi-threaded by rayon: ``RAYON_NUM_THREADS`` = ``--threads`` when given), mean per
     candidate, same tie rule.
   - ``fastchrf_aggregate``: ``fastchrf.aggregate_chrf(pools, pools)``, the "streamlined" chrF of Vamvas & Sennrich
     (2024): each candidate scored against the n-gram statistics pooled over all references; a different utility
     from the mean of pairwise chrF, so its choices are compared and where they differ the sacrebleu expected-utility
     gap between the two choices is given; it has no "same choices" check.
   - checks: ``choices`` (every pool's index equal to sacrebleu's), ``scores`` (max |Δ| of the expected utilities,
     ≤ 1e-9). Goal: xlt ≥ 10× sacrebleu.

2. **decode**: the first 128 prompts (``--prompts``), 48 new tokens, batch 16, SmolLM2 in fp32
   (``load_source("smollm2")``).

   - ``xlt``: :func:`xlt.infer.decode.generate_pool` on all the prompts (its own length buckets of ``--batch``,
     one prefill per prompt, finished rows dropped); pre-tokenised prompts, no tokenizer (no text decoding on either
     side).
   - ``hf``: ``model.generate`` on batches of ``--batch`` prompts in input order, left-padded with the pad token,
     with the attention mask and ``pad_token_id`` set.
   - (a) **greedy**: pool ``greedy`` vs ``generate(do_sample=False)``; both stop at the model's EOS tokens
     (:func:`~xlt.infer.decode.stop_token_ids`: SmolLM2's ``<|im_end|>``; ``--greedy-eos off`` to generate all 48).
     Check: the tokens of every prompt equal; where a prompt differs, the first differing position and the top-2
     logit gap there (one unpadded forward of the prompt + the common prefix, after the hf clock stops) show whether
     it is a near-tie (the two sides' tokens' logits within 0.01). Tokens/s (generated tokens, a stop token
     included, over seconds) of both, ratio; no goal.
   - (b) **pool**: ``greedy,0.3x2,0.7x3,1.0x2`` (8 candidates, 4 temperatures counting greedy as τ = 0, the
     ``xlt generate`` default) in one decode loop vs, per batch, one ``generate`` call per member: ``do_sample=False``
     for greedy and ``do_sample=True, temperature=T, top_k=0, top_p=1.0, num_return_sequences=count`` for the
     others; EOS disabled on both sides (``--pool-eos off``, the default: ``eos_token_ids=[]`` and
     ``eos_token_id=None``), so every candidate is exactly 48 tokens and both sides generate the same count
     (``--pool-eos on``: both stop at the EOS tokens). Generated tokens/s of both, ratio. Checks: the pool's greedy
     row equals the greedy ``generate`` call's tokens (same tolerance of near-ties); the distinct-sample rate per
     temperature is reported as a sanity figure (not a check). Goal: ≥ 2× tokens/s.

Threads: torch's default (all cores) unless ``--threads``; on a machine shared with other jobs use ``--threads 1``
(two threads competing with other processes made a forward up to 15x slower here than one thread). Building the
sample cache is the slow step on a CPU: ~2,200 generated tokens per prompt (64 candidates); measured here, on 2 cores
shared with other jobs, ~21 s per prompt with ``--threads 1`` (~106 tokens/s: ~70 min for 200 prompts) and ~120 s
per prompt with 2 threads (~7 h). ``--build-cache-only`` with ``--cache-budget SECONDS`` builds it in slices (each
run resumes where the last stopped); ``--device cuda`` builds it in minutes.

``--quick``: 10 pools (the first 10 of the same cache, built if missing), 8 prompts at batch 4 and 16 new tokens: a
smoke test, not a measurement. Prints a table and writes one JSON atomically (settings, machine, every figure and
check; no path of this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/peft.py would shadow peft
from xlt.util import peak_rss_mib  # noqa: E402

MODEL = "smollm2"
SRC, TGT = "eng", "swh"
SPLIT = "test"
SEED = 0
MBR_POOL = "0.7x32,1.0x32"  # 64 candidates; the pools of 16 are samples 0-7 of each member
MBR_SIZES = (16, 64)
MBR_MAX_NEW_TOKENS = 48
DECODE_POOL = "greedy,0.3x2,0.7x3,1.0x2"
GOALS = {"mbr": 10.0, "greedy": None, "pool": 2.0}
TIE = 1e-12  # mbr.TIE_TOLERANCE, written out again for the baseline
TOL = {"scores": 1e-9, "near_tie_logit_gap": 0.01}
MBR_SIDES = ("xlt", "sacrebleu", "fastchrf_pairwise", "fastchrf_aggregate")
FULL = {"mbr_pools": 200, "prompts": 128, "batch": 16, "max_new_tokens": 48}
QUICK = {"mbr_pools": 10, "prompts": 8, "batch": 4, "max_new_tokens": 16}


# ---------------------------------------------------------------------------------------------------------
# prompts and the sample cache (parent)
# ---------------------------------------------------------------------------------------------------------
def prompts(n: int, tok) -> list[dict]:
    """The first ``n`` test verses (key, English source, Swahili reference) and their rendered LMT chat prompt."""
    from xlt.corpora import open_corpus
    from xlt.infer.run import Prompt, render_prompt
    from xlt.languages import resolve

    pairs = open_corpus("bible").parallel(SRC, TGT, SPLIT)
    if len(pairs) < n:
        from xlt.errors import XltError

        raise XltError(f"the Bible's {SPLIT} split has {len(pairs)} {SRC}-{TGT} verses, fewer than {n}",
                       "ask for fewer (--mbr-pools / --prompts)")
    src, tgt = resolve(SRC).name, resolve(TGT).name
    return [{"key": k, "source": a, "ref": b,
             "prompt": render_prompt(tok, Prompt(k, a, None, b), src, tgt, "instruction", None)}
            for k, a, b in pairs[:n]]


def cache_settings() -> dict:
    return {"model": MODEL, "corpus": "bible", "split": SPLIT, "src": SRC, "tgt": TGT, "condition": "instruction",
            "pool": MBR_POOL, "max_new_tokens": MBR_MAX_NEW_TOKENS, "seed": SEED,
            "stops": "tokenizer EOS + newline (xlt.infer.run.stop_ids)", "candidate": "first line (run.first_line)",
            "prompt_keys": "verse keys", "encoding": "xlt.infer.run.encode_prompt (as xlt generate)"}


def cache_file(a) -> Path:
    from xlt.util import cache_dir, stable_hash

    folder = Path(a.cache) if a.cache else cache_dir() / "bench" / "generate"
    folder.mkdir(parents=True, exist_ok=True)
    digest = f"{stable_hash(json.dumps(cache_settings(), sort_keys=True)):016x}"[:12]
    return folder / f"mbr-pools-{digest}.jsonl"


def read_cache(path: Path) -> dict[str, dict]:
    """The complete lines of the cache by verse key (a torn last line, from an interrupted build, is cut off)."""
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # an interrupted append: drop the partial line so appending resumes cleanly
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as fh:
            fh.truncate(len(data))
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["key"]] = rec
    return out


def build_cache(a, n: int) -> dict:
    """Make sure the cache holds the first ``n`` prompts' pools (generating the missing ones, resumable); returns
    what the JSON says about it, ``pools`` (n lists of 64 texts, in prompt order) when complete."""
    from xlt.models import load_source, load_tokenizer
    from xlt.models.loading import resolve_source

    path = cache_file(a)
    have = read_cache(path)
    tok = load_tokenizer(resolve_source(MODEL))
    ps = prompts(n, tok)
    missing = [p for p in ps if p["key"] not in have]
    info = {"file": f"<cache>/{path.name}" if a.cache else f"<xlt cache>/bench/generate/{path.name}",
            "settings": cache_settings(), "prompts_cached_before": sum(p["key"] in have for p in ps),
            "generated_now": 0, "cache_batch": a.cache_batch}
    if missing:
        import torch

        from xlt.infer.decode import generate_pool
        from xlt.infer.run import encode_prompt, first_line, stop_ids

        if a.threads:
            torch.set_num_threads(a.threads)
        model, tok, _ = load_source(MODEL)
        model.to(a.device).eval()
        stops = stop_ids(tok)
        print(f"mbr cache: generating {len(missing)} of {n} prompts x 64 candidates into {info['file']} "
              f"(batch {a.cache_batch}; resumable)", flush=True)
        t0 = time.perf_counter()
        done = 0
        tokens = 0
        with open(path, "a", encoding="utf-8") as fh:
            for i in range(0, len(missing), a.cache_batch):
                chunk = missing[i: i + a.cache_batch]
                cands = generate_pool(model, tok, [encode_prompt(tok, p["prompt"]) for p in chunk], MBR_POOL,
                                      max_new_tokens=MBR_MAX_NEW_TOKENS, batch_size=a.cache_batch, seed=SEED,
                                      eos_token_ids=stops, prompt_keys=[p["key"] for p in chunk])
                for p, cs in zip(chunk, cands):
                    tokens += sum(len(c.token_ids) + c.finished for c in cs)
                    rec = {"key": p["key"], "source": p["source"], "ref": p["ref"],
                           "candidates": [first_line(c.text) for c in cs],
                           "temperatures": [c.temperature for c in cs], "samples": [c.sample for c in cs]}
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    have[p["key"]] = rec
                fh.flush()
                os.fsync(fh.fileno())
                done += len(chunk)
                dt = time.perf_counter() - t0
                left = (len(missing) - done) * dt / done
                print(f"  {done}/{len(missing)} prompts, {dt:.0f} s, {tokens / dt:.1f} tokens/s, "
                      f"about {left / 60:.1f} min left", flush=True)
                if a.cache_budget and dt >= a.cache_budget and done < len(missing):
                    print(f"  --cache-budget {a.cache_budget:g} s spent: stopping; rerun to resume", flush=True)
                    break
        dt = time.perf_counter() - t0
        info.update(generated_now=done, generation_seconds=round(dt, 1), generated_tokens=tokens,
                    seconds_per_prompt=round(dt / max(done, 1), 2),
                    estimate_full_minutes=round(FULL["mbr_pools"] * dt / max(done, 1) / 60, 1),
                    device=a.device, threads=a.threads or torch.get_num_threads())
    complete = all(p["key"] in have for p in ps)
    info["complete"] = complete
    if complete:
        info["pools"] = [have[p["key"]]["candidates"] for p in ps]
        info["keys"] = [p["key"] for p in ps]
    return info


def sub_pool(rec_candidates: list[str], size: int) -> list[str]:
    """The first size/2 samples of each temperature of a ``0.7x32,1.0x32`` pool (its candidates are member-major)."""
    if size == 64:
        return list(rec_candidates)
    half = size // 2
    return list(rec_candidates[:half]) + list(rec_candidates[32: 32 + half])


# ---------------------------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------------------------
def _setup(job: dict):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if job.get("threads"):
        os.environ["RAYON_NUM_THREADS"] = str(job["threads"])
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    torch.manual_seed(SEED)


def pick(scores, greedy: int = 0) -> int:
    """The baselines' argmax: ties (within 1e-12 of the best) to ``greedy`` if tied, else the lowest index."""
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s >= best - TIE]
    return greedy if greedy in tied else tied[0]


def mbr_child(job: dict) -> dict:
    import numpy as np

    pools = json.loads(Path(job["pools"]).read_text(encoding="utf-8"))
    side = job["side"]
    info: dict = {}
    if side == "xlt":
        from xlt.infer.mbr import mbr_select_many

        mbr_select_many([["a b c", "a b d"]], utility="chrf")  # warm-up
        t0 = time.perf_counter()
        res = mbr_select_many(pools, utility="chrf")
        seconds = time.perf_counter() - t0
        choices, scores = [r.index for r in res], [r.scores.tolist() for r in res]
    elif side == "sacrebleu":
        from sacrebleu import sentence_chrf

        sentence_chrf("a b c", ["a b d"])  # warm-up
        t0 = time.perf_counter()
        choices, scores = [], []
        for pool in pools:
            s = [float(np.mean([sentence_chrf(c, [e]).score for e in pool])) for c in pool]
            choices.append(pick(s))
            scores.append(s)
        seconds = time.perf_counter() - t0
    else:
        import fastchrf

        info["rayon_threads"] = os.environ.get("RAYON_NUM_THREADS", "rayon default (all cores)")
        fn = fastchrf.pairwise_chrf if side == "fastchrf_pairwise" else fastchrf.aggregate_chrf
        fn([["a b c", "a b d"]], [["a b c", "a b d"]])  # warm-up
        t0 = time.perf_counter()
        out = np.asarray(fn(pools, pools), dtype=np.float64)
        s = out.mean(axis=2) if side == "fastchrf_pairwise" else out
        choices = [pick(row) for row in s.tolist()]
        seconds = time.perf_counter() - t0
        scores = s.tolist()
    Path(job["result"]).write_text(json.dumps({"choices": choices, "scores": scores}), encoding="utf-8")
    return {"seconds": seconds, "load_seconds": 0.0, "info": info}


def _load_model(job: dict):
    from xlt.models import load_source

    t0 = time.perf_counter()
    model, tok, _ = load_source(MODEL)
    model.to(job["device"]).eval()
    return model, tok, time.perf_counter() - t0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _cut(row: list[int], stops: list[int]) -> tuple[list[int], bool]:
    """Generated tokens before the first stop token, and whether a stop token came."""
    for j, t in enumerate(row):
        if t in stops:
            return row[:j], True
    return row, False


def _left_pad(batch: list[list[int]], pad: int, device: str):
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return ids.to(device), mask.to(device), width


def _hf_generate(model, ids, mask, width, new_tokens: int, pad: int, stops: list[int], temperature: float | None,
                 count: int) -> list[list[int]]:
    """One ``model.generate`` call: greedy (temperature None) or plain temperature sampling, ``count`` per prompt
    (rows prompt-major, as ``num_return_sequences`` gives them)."""
    kw = dict(max_new_tokens=new_tokens, pad_token_id=pad, eos_token_id=(stops or None),
              attention_mask=mask, use_cache=True)
    if temperature is None:
        kw.update(do_sample=False)
    else:
        kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=count)
    out = model.generate(ids, **kw)
    return out[:, width:].tolist()


def near_tie(model, prompt: list[int], prefix: list[int], tokens: tuple[int | None, int | None],
             device: str) -> dict:
    """The top-2 logits after ``prompt + prefix`` (one unpadded forward) and the two sides' tokens' logits."""
    import torch

    with torch.no_grad():
        x = torch.tensor([prompt + prefix], dtype=torch.long, device=device)
        logits = model(input_ids=x).logits[0, -1].float().cpu()
    top = torch.topk(logits, 2)
    out = {"top2_ids": top.indices.tolist(), "top2_logits": [round(v, 6) for v in top.values.tolist()],
           "gap": float(top.values[0] - top.values[1])}
    for name, t in zip(("xlt_token", "hf_token"), tokens):
        out[name] = t
        if t is not None:
            out[name + "_logit"] = round(float(logits[t]), 6)
    if None not in tokens:  # how far apart the two sides' own tokens are (the top-2 gap when they are the top 2)
        out["sides_gap"] = abs(float(logits[tokens[0]] - logits[tokens[1]]))
    return out


def decode_child(job: dict) -> dict:
    import torch

    from xlt.infer.decode import generate_pool
    from xlt.infer.pool import parse_pool

    spec = json.loads(Path(job["prompts"]).read_text(encoding="utf-8"))
    ids, pad, device = spec["ids"], spec["pad"], job["device"]
    sub, side = job["sub"], job["side"]
    stops = spec["stops"] if job["eos"] else []
    new, batch = job["max_new_tokens"], job["batch"]
    pool = parse_pool("greedy" if sub == "greedy" else DECODE_POOL)
    model, tok, load_seconds = _load_model(job)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():  # warm-up: the same forward on both sides
        model(input_ids=torch.tensor([ids[0]], device=device))
    _sync(device)
    rows: list[list[dict]] = []  # per prompt, per candidate: {"t": tokens before a stop, "f": stopped}
    if side == "xlt":
        t0 = time.perf_counter()
        cands = generate_pool(model, None, ids, pool, max_new_tokens=new, batch_size=batch, seed=SEED,
                              eos_token_ids=stops)
        _sync(device)
        seconds = time.perf_counter() - t0
        rows = [[{"t": list(c.token_ids), "f": c.finished} for c in cs] for cs in cands]
    else:
        raw: list[list[list[int]]] = []
        t0 = time.perf_counter()
        for i in range(0, len(ids), batch):
            x, mask, width = _left_pad(ids[i: i + batch], pad, device)
            per_prompt: list[list[list[int]]] = [[] for _ in range(x.shape[0])]
            for m in pool:
                out = _hf_generate(model, x, mask, width, new, pad, stops, m.temperature, m.count)
                for r, toks in enumerate(out):
                    per_prompt[r // m.count].append(toks)
            raw += per_prompt
        _sync(device)
        seconds = time.perf_counter() - t0
        for cands in raw:
            rows.append([dict(zip("tf", _cut(toks, stops))) for toks in cands])
    tokens = sum(len(c["t"]) + bool(c["f"]) for cs in rows for c in cs)
    info: dict = {"generated_tokens": tokens, "tokens_per_second": tokens / seconds,
                  "candidates": sum(len(cs) for cs in rows), "prompts": len(rows)}
    if device.startswith("cuda"):
        info["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    result = {"rows": rows}
    # after the clock: near-tie analysis of greedy differences (the xlt child ran first and wrote its tokens)
    other = Path(job["compare_with"]) if job.get("compare_with") else None
    if side == "hf" and other is not None and other.is_file():
        xrows = json.loads(other.read_text(encoding="utf-8"))["rows"]
        g = pool.greedy_row
        diffs = []
        for p, (xr, hr) in enumerate(zip(xrows, rows)):
            xa, ha = xr[g], hr[g]
            if xa == ha:
                continue
            xt = xa["t"] + ([stops[0]] if xa["f"] and stops else [])
            ht = ha["t"] + ([stops[0]] if ha["f"] and stops else [])
            j = next((k for k, (u, v) in enumerate(zip(xt, ht)) if u != v), min(len(xt), len(ht)))
            d = {"prompt": p, "position": j, "xlt_len": len(xa["t"]), "hf_len": len(ha["t"]),
                 "xlt_finished": xa["f"], "hf_finished": ha["f"]}
            d.update(near_tie(model, ids[p], xt[:j], (xt[j] if j < len(xt) else None,
                                                      ht[j] if j < len(ht) else None), device))
            diffs.append(d)
        result["greedy_diffs"] = diffs
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")
    return {"seconds": seconds, "load_seconds": load_seconds, "info": info}


def child(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    _setup(job)
    out = mbr_child(job) if job["part"] == "mbr" else decode_child(job)
    out["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------------------
def run_child(job: dict, work: Path, name: str) -> dict:
    path = work / f"job-{name}.json"
    path.write_text(json.dumps(job), encoding="utf-8")
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(path)], capture_output=True,
                       text=True)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"error": _scrub((p.stderr or p.stdout).strip()[-2000:])}
    return json.loads(line[7:])


def compare_mbr(ref: dict, other: dict, pools: list[list[str]]) -> dict:
    """Choices and expected utilities of one side against sacrebleu's."""
    import numpy as np

    R, O = np.asarray(ref["scores"]), np.asarray(other["scores"])
    mism = []
    for i, (c, d) in enumerate(zip(ref["choices"], other["choices"])):
        if c != d:
            mism.append({"pool": i, "sacrebleu": c, "other": d,
                         "sacrebleu_utility_gap": float(R[i, c] - R[i, d]),
                         "same_text": pools[i][c] == pools[i][d]})
    return {"mismatched_pools": len(mism), "pools": len(pools), "mismatches": mism[:10],
            "same_text_mismatches": sum(m["same_text"] for m in mism),
            "max_score_delta": float(np.abs(R - O).max())}


def run_mbr(a, work: Path, res: dict) -> list[dict]:
    t0 = time.perf_counter()
    cache = build_cache(a, a.mbr_pools)
    cache["seconds_in_this_run"] = round(time.perf_counter() - t0, 1)
    pools64 = cache.pop("pools", None)
    cache.pop("keys", None)
    res["settings"]["mbr_cache"] = cache
    if pools64 is None:
        return [{"part": "mbr", "case": f"pool{n}", "goal": GOALS["mbr"],
                 "error": f"the sample cache is incomplete ({cache['prompts_cached_before'] + cache['generated_now']}"
                          f"/{a.mbr_pools} prompts); rerun to resume building it", "error_side": "cache"}
                for n in MBR_SIZES]
    try:
        import fastchrf  # noqa: F401
        from importlib.metadata import version

        fast = {"available": True, "version": version("fastchrf")}
    except Exception as e:  # noqa: BLE001 - record why, whatever it is
        fast = {"available": False, "why": f"{type(e).__name__}: {e}",
                "fix": "pip install fastchrf (a Rust wheel; 0.2.1 on PyPI)"}
    res["settings"]["fastchrf"] = fast
    sides = [s for s in MBR_SIDES if fast["available"] or not s.startswith("fastchrf")]
    rows = []
    for size in MBR_SIZES:
        pools = [sub_pool(p, size) for p in pools64]
        pools_path = work / f"pools-{size}.json"
        pools_path.write_text(json.dumps(pools, ensure_ascii=False), encoding="utf-8")
        chars = [len(c) for p in pools for c in p]
        row: dict = {"part": "mbr", "case": f"pool{size}", "goal": GOALS["mbr"], "baseline": "sacrebleu",
                     "info": {"pools": len(pools), "candidates_per_pool": size, "pairs": len(pools) * size * size,
                              "mean_chars": sum(chars) / len(chars), "empty_candidates": chars.count(0),
                              "distinct_per_pool": sum(len(set(p)) for p in pools) / len(pools)}}
        results = {}
        for side in sides:
            job = {"part": "mbr", "side": side, "pools": str(pools_path), "threads": a.threads,
                   "result": str(work / f"mbr-{size}-{side}.json")}
            out = run_child(job, work, f"mbr-{size}-{side}")
            row[side] = out
            if "error" in out:
                print(f"mbr pool{size} {side} failed:\n{out['error'][-1500:]}", flush=True)
                continue
            results[side] = json.loads(Path(job["result"]).read_text(encoding="utf-8"))
            print(f"mbr pool{size} {side}: {out['seconds']:.3f} s, peak RSS {out['peak_rss_mib']:.0f} MiB", flush=True)
        if "xlt" not in results or "sacrebleu" not in results:
            bad = "xlt" if "xlt" not in results else "sacrebleu"
            row.update(error=row[bad]["error"], error_side=bad)
            rows.append(row)
            continue
        ref = results["sacrebleu"]
        row["info"]["tied_pools"] = sum(
            sum(s >= max(sc) - TIE for s in sc) > 1 for sc in ref["scores"])
        cmp = compare_mbr(ref, results["xlt"], pools)
        row["checks"] = {
            "choices": {"delta": cmp["mismatched_pools"], "tol": 0, "what": "pools whose choice differs from the "
                        "sacrebleu double loop's", "mismatches": cmp["mismatches"]},
            "scores": {"delta": cmp["max_score_delta"], "tol": TOL["scores"],
                       "what": "max |Δ| of every candidate's expected chrF against the sacrebleu double loop's"}}
        row["ratio"] = row["sacrebleu"]["seconds"] / row["xlt"]["seconds"]
        for side in ("fastchrf_pairwise", "fastchrf_aggregate"):
            if side in results:
                c = compare_mbr(ref, results[side], pools)
                c["ratio_vs_sacrebleu"] = row["sacrebleu"]["seconds"] / row[side]["seconds"]
                c["xlt_ratio_vs_it"] = row[side]["seconds"] / row["xlt"]["seconds"]
                if side == "fastchrf_aggregate":
                    c["why"] = ("aggregate_chrf is a different utility (Vamvas & Sennrich 2024): each candidate's "
                                "chrF against the n-gram statistics averaged over all references, not the mean of "
                                "pairwise chrF, so its argmax may differ; sacrebleu_utility_gap is how much expected "
                                "pairwise chrF its choice loses")
                else:
                    c["why"] = ("pairwise_chrf is meant to be sacrebleu's chrF; any score difference is its "
                                "floating-point order (or text handling), any choice difference a near-tie "
                                "(sacrebleu_utility_gap) or that")
                row[side + "_vs_sacrebleu"] = c
        _judge(row)
        rows.append(row)
    return rows


def _distinct(rows: list[list[dict]], pool) -> dict:
    """Mean share of distinct candidates per prompt for each sampled member (a sanity figure of the sampling)."""
    out = {}
    r = 0
    for m in pool:
        if m.temperature is not None and m.count > 1:
            shares = [len({json.dumps(c["t"]) for c in cs[r: r + m.count]}) / m.count for cs in rows]
            out[m.describe()] = sum(shares) / len(shares)
        r += m.count
    return out


def run_decode(a, work: Path, res: dict) -> list[dict]:
    from xlt.infer.decode import stop_token_ids
    from xlt.infer.run import encode_prompt
    from xlt.infer.pool import parse_pool
    from xlt.models import load_tokenizer
    from xlt.models.loading import resolve_source

    tok = load_tokenizer(resolve_source(MODEL))
    ps = prompts(a.prompts, tok)
    ids = [encode_prompt(tok, p["prompt"]) for p in ps]

    from types import SimpleNamespace

    from transformers import GenerationConfig

    # stop_token_ids reads the model's generation config: read it without loading the weights
    stops = stop_token_ids(SimpleNamespace(generation_config=GenerationConfig.from_pretrained(resolve_source(MODEL))),
                           tok, None)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    spec = work / "decode-prompts.json"
    spec.write_text(json.dumps({"ids": ids, "pad": pad, "stops": stops}), encoding="utf-8")
    lengths = [len(x) for x in ids]
    res["settings"]["decode_prompts"] = {
        "n": len(ids), "kind": "LMT translation prompt en->sw in the chat template (xlt.infer.run.render_prompt, "
        "condition=instruction), tokenised by xlt.infer.run.encode_prompt as xlt generate does", "first_key": ps[0]["key"],
        "prompt_tokens": {"mean": sum(lengths) / len(lengths), "min": min(lengths), "max": max(lengths)},
        "stop_tokens": stops, "pad_token_id": pad}
    rows = []
    for sub in ("greedy", "pool"):
        eos = (a.greedy_eos if sub == "greedy" else a.pool_eos) == "on"
        pool = parse_pool("greedy" if sub == "greedy" else DECODE_POOL)
        row: dict = {"part": "decode", "case": sub, "goal": GOALS[sub], "baseline": "hf",
                     "info": {"pool": pool.describe(), "eos": "enabled: both sides stop at " + str(stops) if eos
                              else "disabled on both sides: every candidate is max_new_tokens long",
                              "batch": a.batch, "max_new_tokens": a.max_new_tokens}}
        results = {}
        for side in ("xlt", "hf"):
            job = {"part": "decode", "sub": sub, "side": side, "prompts": str(spec), "device": a.device,
                   "threads": a.threads, "eos": eos, "max_new_tokens": a.max_new_tokens, "batch": a.batch,
                   "result": str(work / f"decode-{sub}-{side}.json"),
                   "compare_with": str(work / f"decode-{sub}-xlt.json") if side == "hf" else None}
            out = run_child(job, work, f"decode-{sub}-{side}")
            row[side] = out
            if "error" in out:
                print(f"decode {sub} {side} failed:\n{out['error'][-1500:]}", flush=True)
                break
            results[side] = json.loads(Path(job["result"]).read_text(encoding="utf-8"))
            print(f"decode {sub} {side}: {out['seconds']:.2f} s, {out['info']['tokens_per_second']:.1f} tokens/s, "
                  f"peak RSS {out['peak_rss_mib']:.0f} MiB", flush=True)
        if len(results) < 2:
            bad = next(s for s in ("xlt", "hf") if "error" in row.get(s, {"error": 1}))
            row.update(error=row[bad]["error"], error_side=bad)
            rows.append(row)
            continue
        x, h = results["xlt"]["rows"], results["hf"]["rows"]
        g = pool.greedy_row
        diffs = results["hf"].get("greedy_diffs", [])
        worst = max((d.get("sides_gap", d["gap"]) for d in diffs), default=0.0)
        row["checks"] = {"greedy_tokens": {
            "delta": worst, "tol": TOL["near_tie_logit_gap"],
            "what": ("prompts whose greedy tokens differ between generate_pool and model.generate(do_sample=False); "
                     "delta = the largest logit gap between the two sides' tokens at a first difference, in one "
                     "unpadded forward (a near-tie when ≤ tol; the top-2 gap where one side had stopped)"),
            "differing_prompts": len(diffs), "prompts": len(x), "diffs": diffs[:20]}}
        if sub == "pool":
            row["info"]["distinct_share"] = {"xlt": _distinct(x, pool), "hf": _distinct(h, pool)}
        row["info"]["greedy_rows_equal"] = sum(xr[g] == hr[g] for xr, hr in zip(x, h))
        row["ratio"] = row["xlt"]["info"]["tokens_per_second"] / row["hf"]["info"]["tokens_per_second"]
        row["tokens_equal_count"] = row["xlt"]["info"]["generated_tokens"] == row["hf"]["info"]["generated_tokens"]
        _judge(row)
        rows.append(row)
    return rows


def _judge(row: dict) -> None:
    """Each check's ``ok``, the row's largest |Δ| of the float checks and ``holds``: the goal (if any) met and every
    check ok."""
    for c in row["checks"].values():
        c["ok"] = bool(float(c["delta"]) <= c["tol"] and c.get("equal", True))
    floats = [float(c["delta"]) for c in row["checks"].values() if c["tol"] > 0]
    row["max_delta"] = max(floats) if floats else 0.0
    goal_met = row["goal"] is None or row["ratio"] >= row["goal"]
    row["holds"] = bool(goal_met and all(c["ok"] for c in row["checks"].values()))


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def render(res: dict) -> str:
    lines = ["| part | case | xlt s | baseline | baseline s | × | xlt tok/s | baseline tok/s | xlt peak RSS MiB | "
             "baseline peak RSS MiB | check | goal | holds |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    notes = []
    for r in res["rows"]:
        goal = "—" if r["goal"] is None else f"≥ {r['goal']:g}×"
        if "error" in r:
            lines.append(f"| {r['part']} | {r['case']} | error ({r['error_side']}) | | | | | | | | | {goal} | no |")
            notes.append(f"{r['part']} {r['case']} {r['error_side']}: {r['error'][-300:]}")
            continue
        x, b = r["xlt"], r[r["baseline"]]
        bad = [k for k, c in r["checks"].items() if not c["ok"]]
        slow = r["goal"] is not None and r["ratio"] < r["goal"]
        holds = "yes" if not slow and not bad else "no (" + ", ".join((["speed"] if slow else []) + bad) + ")"
        if r["part"] == "mbr":
            ch = r["checks"]["choices"]
            check = (f"{ch['delta']}/{r['info']['pools']} choices differ, "
                     f"max |Δ| {_fmt(r['checks']['scores']['delta'])}")
            xt = bt = ""
        else:
            ch = r["checks"]["greedy_tokens"]
            check = (f"{ch['differing_prompts']}/{ch['prompts']} greedy rows differ"
                     + (f", max gap {ch['delta']:.2g}" if ch["differing_prompts"] else ""))
            xt, bt = f"{x['info']['tokens_per_second']:.1f}", f"{b['info']['tokens_per_second']:.1f}"
        lines.append(f"| {r['part']} | {r['case']} | {x['seconds']:.3f} | {r['baseline']} | {b['seconds']:.3f} | "
                     f"{r['ratio']:.1f} | {xt} | {bt} | {x['peak_rss_mib']:.0f} | {b['peak_rss_mib']:.0f} | {check} | "
                     f"{goal} | {holds} |")
    text = "\n".join(lines) + "\n"
    for r in res["rows"]:
        if "checks" not in r:
            continue
        text += f"\n{r['part']} / {r['case']}\n"
        for side in ("fastchrf_pairwise", "fastchrf_aggregate"):
            c = r.get(side + "_vs_sacrebleu")
            if c:
                text += (f"  {side}: {r[side]['seconds']:.3f} s ({c['ratio_vs_sacrebleu']:.1f}× sacrebleu; xlt "
                         f"{c['xlt_ratio_vs_it']:.2f}× it), {c['mismatched_pools']}/{c['pools']} choices differ from "
                         f"sacrebleu, max |Δ| {_fmt(c['max_score_delta'])}\n")
            elif isinstance(r.get(side), dict) and "error" in r[side]:
                text += f"  {side}: error {r[side]['error'][-200:]}\n"
        if r["part"] == "decode":
            xi, hi = r["xlt"]["info"], r["hf"]["info"]
            text += (f"  tokens: xlt {xi['generated_tokens']}, hf {hi['generated_tokens']}; load (not timed): xlt "
                     f"{r['xlt']['load_seconds']:.1f} s, hf {r['hf']['load_seconds']:.1f} s; greedy rows equal "
                     f"{r['info']['greedy_rows_equal']}/{len_or(r)}\n")
            if "distinct_share" in r["info"]:
                text += f"  distinct share per temperature: {json.dumps(r['info']['distinct_share'])}\n"
            for d in r["checks"]["greedy_tokens"]["diffs"][:5]:
                text += (f"  prompt {d['prompt']}: first difference at token {d['position']} (xlt {d.get('xlt_token')},"
                         f" hf {d.get('hf_token')}); top-2 logits {d['top2_logits']}, gap "
                         f"{d.get('sides_gap', d['gap']):.2g}\n")
        for k, c in r["checks"].items():
            text += f"  {k}: Δ {_fmt(float(c['delta']))} (tol {c['tol']:g}) {'ok' if c['ok'] else 'FAILS'}\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text


def len_or(r: dict) -> int:
    return r["checks"]["greedy_tokens"]["prompts"]


def _scrub(text: str) -> str:
    """No path of this machine in what is written (tests/test_no_machine_paths.py)."""
    from xlt.util import scrub_machine_paths

    return scrub_machine_paths(text, ROOT)


def _write_atomic(path: Path, text: str) -> None:
    from xlt.util import write_text_atomic

    write_text_atomic(path, text)


def _command() -> str:
    """The command as run, without this machine's paths."""
    argv, skip = [], False
    for x in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if x.startswith(("--out=", "--work=", "--cache=")):
            argv.append("--cache DIR" if x.startswith("--cache=") else "")
            continue
        if x in ("--out", "--work", "--cache"):
            skip = True
            if x == "--cache":
                argv.append("--cache DIR")
            continue
        argv.append(x)
    return " ".join(["python bench/generate.py"] + [x for x in argv if x])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=("all", "mbr", "decode"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (10 pools, 8 prompts, batch 4, "
                                                         "16 new tokens)")
    ap.add_argument("--mbr-pools", type=int, default=None, help="pools per size [200; --quick 10]")
    ap.add_argument("--prompts", type=int, default=None, help="decode prompts [128; --quick 8]")
    ap.add_argument("--batch", type=int, default=None, help="decode prompts per batch [16; --quick 4]")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="decode tokens per candidate [48; --quick 16]")
    ap.add_argument("--greedy-eos", default="on", choices=("on", "off"), help="(a) stop at EOS on both sides")
    ap.add_argument("--pool-eos", default="off", choices=("on", "off"), help="(b) stop at EOS on both sides")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (decode part and the cache build)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads / RAYON_NUM_THREADS everywhere")
    ap.add_argument("--cache", default=None, help="folder of the SmolLM2 sample cache [xlt cache dir/bench/generate]")
    ap.add_argument("--cache-batch", type=int, default=4,
                    help="prompts per generate_pool call when building the cache (x64 rows; 4 = 256 rows)")
    ap.add_argument("--cache-budget", type=float, default=None,
                    help="stop building the cache after about this many seconds (resume by rerunning)")
    ap.add_argument("--build-cache-only", action="store_true", help="only build (or resume) the MBR sample cache")
    ap.add_argument("--out", default=str(HERE / "results" / "generate.json"))
    ap.add_argument("--work", default=None, help="folder for the children's files [default: a temporary one]")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = QUICK if a.quick else FULL
    for k, v in sizes.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.build_cache_only:
        info = build_cache(a, a.mbr_pools)
        info.pop("pools", None), info.pop("keys", None)
        print(json.dumps(info, indent=2))
        return
    import torch

    from xlt.util import machine_info

    parts = ("mbr", "decode") if a.part == "all" else (a.part,)
    work = Path(a.work or tempfile.mkdtemp(prefix="xlt-bench-generate-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"benchmark": "generate", "quick": a.quick, "settings": {
        "parts": list(parts), "model": MODEL, "src": SRC, "tgt": TGT, "split": SPLIT, "seed": SEED,
        "mbr": {"pools": a.mbr_pools, "sizes": list(MBR_SIZES), "generated_pool": MBR_POOL,
                "pool16": "samples 0-7 of each temperature (= the candidates of 0.7x8,1.0x8)",
                "utility": "chrF2 (sacrebleu sentence_chrf defaults); evidence = the pool itself",
                "tie_rule": "scores within 1e-12 of the best: index 0 if tied, else the lowest tied index",
                "sides": list(MBR_SIDES)},
        "decode": {"prompts": a.prompts, "batch": a.batch, "max_new_tokens": a.max_new_tokens,
                   "pool": DECODE_POOL, "greedy_eos": a.greedy_eos, "pool_eos": a.pool_eos,
                   "xlt": "generate_pool over all prompts (its own length buckets of --batch), pre-tokenised, no "
                          "tokenizer", "hf": "model.generate per input-order batch of --batch, left padding, "
                          "attention mask, pad_token_id; one call per pool member (greedy: do_sample=False; "
                          "T x n: do_sample=True, temperature=T, top_k=0, top_p=1.0, num_return_sequences=n)",
                   "dtype": "float32"},
        "device": a.device, "threads": a.threads or torch.get_num_threads(), "tolerances": TOL, "goals": GOALS,
        "timing": ("perf_counter around the work only; model load, input reading and one identical warm-up call "
                   "apart; on CUDA synchronised; peak RSS = the child process's VmHWM (model load included)")}}
    rows: list[dict] = []
    if "mbr" in parts:
        rows += run_mbr(a, work, res)
    if "decode" in parts:
        rows += run_decode(a, work, res)
    res["rows"] = rows
    res["command"] = _command()
    res["machine"] = machine_info(("torch", "transformers", "tokenizers", "numpy", "scipy", "sacrebleu", "fastchrf"))
    if a.device.startswith("cuda") and torch.cuda.is_available():
        res["machine"]["gpu"] = torch.cuda.get_device_name(0)
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    text = render(res)
    print("\n" + text)
    out = Path(a.out)
    _write_atomic(out, _scrub(json.dumps(res, indent=2, ensure_ascii=False, default=str)) + "\n")
    print(f"wrote {out}")
    if a.work is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
