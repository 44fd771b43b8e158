"""Benchmark: `xlt analyze` (one capture pass, batched, reductions in the pass) against the naive routes (issue 15).

    python bench/analyze.py [--part all|whole|latent|routing] [--models smollm2,gemma3]
                            [--langs eng,fra,deu,rus,cmn,hin,arb,swh] [--n 300] [--tiny-moe PATH]
                            [--threads N] [--repeat N] [--out bench/results/analyze.json]

Every side runs in its own process (so each has its own peak memory, the process's VmHWM, model load included);
wall time is ``time.perf_counter()`` around the work only: the model is loaded (``load_seconds``, reported apart)
and the corpus opened before the clock starts. Both sides get the same verse-aligned Bible texts
(:func:`xlt.analyze.aligned_texts`, ``--n`` per language, reference ``eng``), the same token ids
(:func:`xlt.analyze.capture.tokenize`: BOS first, at most 128 tokens) and fp32 weights. With ``--repeat N`` each side
does its work N times in its process and reports the fastest (``all_seconds`` lists every run): the shared cores'
speed drifts by ±20 % from minute to minute, and the minimum is the least disturbed run of either side.

1. **whole** (each of ``--models``): the whole analysis.

   - ``xlt``: ``analyze([(name, model, tok)], langs, "alignment,neurons,lens", corpus=bible, n=N, heldout=0,
     options={"ablation_texts": 0, "neuron_min_tokens": ...})`` (``out=None``: no report files), i.e. one
     capture pass at batch 16 feeding the pooled hidden states, the LAPE counts and the logit lens, then the
     alignment metrics, LAPE selection + two-halves stability and the lens report.
   - ``naive``: a pass per metric, batch 1, each forward with ``output_hidden_states=True`` and the full
     (1, T, V) logits (copied to the CPU): (a) alignment: forward hooks on the block-0 input, every block's output
     and the final norm's output copy every hidden state to the CPU, mean-pooled there (BOS left out, as
     :class:`~xlt.analyze.capture.HiddenProbe`), then :func:`xlt.analyze.alignment.layer_alignment` per layer and
     language, as the ``alignment`` analysis does; (b) neurons: :func:`xlt.analyze.neurons.naive_lape_counts` (the
     port of the paper's ``activation.py``, one sequence at a time) on each half of every language's texts, then
     the same :func:`~xlt.analyze.neurons.lape` and :func:`~xlt.analyze.neurons.stability`; (c) logit lens: every
     layer's last-token state from the ``hidden_states`` tuple decoded with the model's final norm and full LM head
     (soft-capping where the config has it; the last layer is the model's own logits, as the tuple's last entry is
     already normed), then entropy (bits), KL to the last layer and top-1 agreement per text and layer.
   - equal: pooled states (every language, text, layer; max |Δ| relative to the largest |value| of that layer,
     ≤ 1e-5, the absolute figure reported too), every alignment number (≤ 1e-5), LAPE token totals (exactly) and
     counts of both halves (each within one), the selected neuron sets (exactly), lens entropies per text and layer
     (≤ 1e-4 bits). Batched and single-sequence fp32 matmuls round differently, so an FFN pre-activation within
     ~1e-7 of zero can change sign between the two sides and a count by one: the check reports how many of the
     layer × neuron counts differ, and the xlt child (after its clock stops and its peak RSS is read) counts the languages that differ
     again with ``ActivationProbe`` at batch 1, which must equal the naive counts exactly
     (``lape_counts_batch1``). Goal: ≥ 3×.
2. **latent** (``--latent-model``, default SmolLM2; ``--latent-pair`` SRC-TGT, default fra-cmn): Wendler et al.'s
   latent-language curves. Word triples are induced once from the Bible before either side runs.

   - ``xlt``: :func:`xlt.analyze.latent.latent_language` (prompt building, one lens pass at batch 16 decoding the
     last token only, bootstrap intervals, energy and top tokens as well).
   - ``naive``: the same :meth:`~xlt.analyze.latent.LatentTask.build`, then per batch of 16 prompts
     ``output_hidden_states=True`` and ``tuned_lens.nn.lenses.LogitLens.from_model(model)`` applied to every
     layer's full (B, T, d) hidden states (the model's own logits at the last layer, as tuned-lens's
     ``PredictionTrajectory`` does), log-softmax over the vocabulary, and P(set) = Σ p over the same start-token
     sets at each prompt's last real position.
   - equal: P_target, P_latent (and P_source) per prompt and layer, ≤ 1e-5. Goal: ≥ 5×.
3. **routing** (the tiny MoE in ``--tiny-moe PATH``, e.g. from :func:`xlt.analyze.tiny_moe.train_tiny_moe`; without
   it a randomly initialised OLMoE-style :func:`xlt.models.tiny.tiny_moe` with a BPE trained on the Bible, noted as
   such in the JSON):

   - ``xlt``: one :class:`~xlt.analyze.routing.RoutingProbe` pass (batch 16), then
     :func:`~xlt.analyze.routing.routing_report`.
   - ``naive``: one sequence at a time with ``output_router_logits=True``; per layer and token softmax, top-k and
     renormalisation in NumPy (float64), mean over the sequence; ``scipy.spatial.distance.jensenshannon(p, q) ** 2``
     (natural log) per parallel pair and layer, mean over pairs.
   - equal: the per-sequence top-k-weight importance vectors and the per-layer JSD to ``eng`` (the report rounds
     to 6 decimals, so the comparison uses the same JSD unrounded), ≤ 1e-6. Goal: ≥ 5×.

Prints a table (part, model, seconds, ratio, peak RSS, max |Δ| of the float checks, goal, holds: the goal met
*and* every equality check within its tolerance, the exact LAPE ones included) and every check below it, and
writes one JSON (settings, machine, every figure and check; no path of this machine).
"""

from __future__ import annotations

import argparse
import json
import math
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

LANGS = "eng,fra,deu,rus,cmn,hin,arb,swh"
PARTS = ("whole", "latent", "routing")
SIDES = ("naive", "xlt")  # naive first: the xlt side reads its LAPE counts after its clock stops
GOALS = {"whole": 3.0, "latent": 5.0, "routing": 5.0}
TOL = {"pooled_states_rel": 1e-5, "alignment": 1e-5, "lape_counts": 1, "lape_neurons": 0, "lens_entropy_bits": 1e-4,
       "p_lang": 1e-5, "importance": 1e-6, "jsd": 1e-6}
BATCH = 16
MAX_LENGTH = 128
LATENT_MAX_LENGTH = 256
REF = "eng"


# ---------------------------------------------------------------------------------------------------------
# shared set-up (each child)
# ---------------------------------------------------------------------------------------------------------
def _setup(a):
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)


def _load(a):
    """(model, tokenizer, load seconds) of the child's model, on ``--device``, in eval mode."""
    from xlt.models import load_model, load_source, load_tokenizer

    t0 = time.perf_counter()
    if a.part == "routing":
        model, tok = load_model(a.model_path), load_tokenizer(a.model_path)
    else:
        model, tok, _ = load_source(a.model)
    model.to(a.device).eval()
    return model, tok, time.perf_counter() - t0


def _texts(a):
    """(corpus, language codes with the reference first, {lang: n aligned texts})."""
    from xlt.analyze.engine import _languages, aligned_texts
    from xlt.corpora import open_corpus

    corp = open_corpus("bible")
    codes, ref = _languages(a.langs, corp, REF)
    texts, _ = aligned_texts(corp, codes, ref, a.n, 0)
    return corp, codes, texts


def _pad_id(tok) -> int:
    pad = getattr(tok, "pad_token_id", None)
    return int(pad) if pad is not None else int(getattr(tok, "eos_token_id", None) or 0)


# ---------------------------------------------------------------------------------------------------------
# part 1: the whole analysis
# ---------------------------------------------------------------------------------------------------------
def _min_tokens(a, tok, texts) -> int:
    """``--neuron-min-tokens``, lowered to the smallest half's token count when the texts are fewer (tiny runs)."""
    from xlt.analyze.capture import tokenize

    ids = tokenize(tok, texts, MAX_LENGTH).ids
    least = min(min(sum(len(r) for r in rows[:len(rows) // 2]), sum(len(r) for r in rows[len(rows) // 2:]))
                for rows in ids.values())
    return min(a.neuron_min_tokens, least)


def whole_xlt(a, model, tok) -> tuple[float, dict, dict]:
    import xlt.analyze.capture as cap
    from xlt.analyze import analyze
    from xlt.analyze.lens import LensProbe
    from xlt.analyze.neurons import ActivationProbe

    corp, codes, texts = _texts(a)
    min_tokens = _min_tokens(a, tok, texts)
    seen: list = []
    run_probes = cap.run_probes

    def recording(model, tok_, probes, *args, **kw):  # keep the probes to read what they captured afterwards
        seen.extend(probes)
        return run_probes(model, tok_, probes, *args, **kw)

    cap.run_probes = recording
    t0 = time.perf_counter()
    res = analyze([(a.model, model, tok)], codes, "alignment,neurons,lens", None, corpus=corp, ref=REF, n=a.n,
                  heldout=0, options={"ablation_texts": 0, "neuron_min_tokens": min_tokens}, batch_size=BATCH,
                  max_length=MAX_LENGTH, device=a.device, show_progress=False)
    seconds = time.perf_counter() - t0
    cap.run_probes = run_probes
    hidden = next(p for p in seen if isinstance(p, cap.HiddenProbe)).result()
    act = next(p for p in seen if isinstance(p, ActivationProbe))
    first, second = act.halves()
    lens = next(p for p in seen if isinstance(p, LensProbe)).result()
    r_al, r_ne = res.results["alignment"][a.model], res.results["neurons"][a.model]
    out = {"pooled": hidden, "alignment": r_al["per_lang"],
           "counts": {"first": first.counts, "second": second.counts},
           "n_tokens": {"first": first.n_tokens, "second": second.n_tokens},
           "n_neurons": r_ne["n_neurons"], "per_layer": r_ne["per_layer"], "jaccard": r_ne["stability_jaccard"],
           "lens": {g: {"entropy": r.entropy, "kl": r.kl, "top1_agree": r.top1_agree}
                    for g, r in lens.groups.items()}}
    info = {"langs": codes, "texts_per_lang": len(texts[REF]), "neuron_min_tokens": min_tokens,
            "tokens": {k: int(first.n_tokens[k] + second.n_tokens[k]) for k in first.n_tokens},
            "layers": int(next(iter(hidden.values())).shape[1]),
            "xlt_seconds_inside": {k: round(v, 3) for k, v in res.data["seconds"].items()}}
    return seconds, out, info


def _decoder(model):
    """(final norm, LM head, soft-cap or None) of a causal LM, for the naive lens."""
    from xlt.analyze.lens import final_norm

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return final_norm(model), model.get_output_embeddings(), getattr(cfg, "final_logit_softcapping", None)


def whole_naive(a, model, tok) -> tuple[float, dict, dict]:
    import torch

    from xlt.analyze import aligned_texts
    from xlt.analyze.alignment import layer_alignment
    from xlt.analyze.analyses.alignment import AlignmentOptions
    from xlt.analyze.analyses.neurons import NeuronOptions
    from xlt.analyze.capture import decoder_layers, tokenize
    from xlt.analyze.engine import _languages
    from xlt.analyze.neurons import lape, naive_lape_counts, stability

    corp, codes, texts0 = _texts(a)
    min_tokens = _min_tokens(a, tok, texts0)
    al_opts, ne_opts = AlignmentOptions(), NeuronOptions()
    device = next(model.parameters()).device
    blocks = decoder_layers(model)
    norm, head, softcap = _decoder(model)
    n_layers = len(blocks)

    t0 = time.perf_counter()
    codes, ref = _languages(codes, corp, REF)
    texts, _ = aligned_texts(corp, codes, ref, a.n, 0)
    ids = tokenize(tok, texts, MAX_LENGTH).ids

    # (a) alignment: hooks copy every hidden state to the CPU; output_hidden_states and full logits as usual
    store: list = [None] * (n_layers + 1)

    def grab(i):
        def fn(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            store[i] = h.detach().cpu()
        return fn

    def grab_input(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        store[0] = h.detach().cpu()

    handles = [blocks[0].register_forward_pre_hook(grab_input, with_kwargs=True)]
    handles += [blocks[i].register_forward_hook(grab(i + 1)) for i in range(n_layers - 1)]
    handles.append(norm.register_forward_hook(grab(n_layers)))
    pooled = {}
    try:
        with torch.inference_mode():
            for lang, rows in ids.items():
                pooled[lang] = torch.zeros(len(rows), n_layers + 1, model.config.get_text_config().hidden_size)
                for i, r in enumerate(rows):
                    out = model(input_ids=torch.tensor([r], device=device), output_hidden_states=True,
                                use_cache=False)
                    out.logits.float().cpu()  # the full (1, T, V) logits, as the usual scripts keep them
                    for layer, h in enumerate(store):
                        x = h[0].float()
                        pooled[lang][i, layer] = x[1:].mean(0) if x.shape[0] > 1 else x.mean(0)
                    store[:] = [None] * (n_layers + 1)
    finally:
        for h in handles:
            h.remove()
    alignment = {}
    for lang, X in pooled.items():
        if lang == ref:
            continue
        rows_ = [layer_alignment(X[:, layer], pooled[ref][:, layer], n_perm=al_opts.n_perm, seed=0, k=al_opts.knn)
                 for layer in range(X.shape[1])]
        d = {k: [r[k] for r in rows_] for k in rows_[0]}
        d["retrieval"] = [(x + y) / 2 for x, y in zip(d["retrieval_x2y"], d["retrieval_y2x"])]
        alignment[lang] = d

    # (b) neurons: the paper's counting, one sequence at a time, on each half; then the same selection
    first = naive_lape_counts(model, tok, {k: v[:len(v) // 2] for k, v in texts.items()}, MAX_LENGTH)
    second = naive_lape_counts(model, tok, {k: v[len(v) // 2:] for k, v in texts.items()}, MAX_LENGTH)
    full_counts = {k: first.counts[k] + second.counts[k] for k in first.counts}
    full_tokens = {k: first.n_tokens[k] + second.n_tokens[k] for k in first.n_tokens}
    params = dict(top_rate=ne_opts.top_rate, filter_rate=ne_opts.filter_rate,
                  activation_bar_ratio=ne_opts.activation_bar_ratio)
    neurons = lape(full_counts, full_tokens, min_tokens=min_tokens, **params)
    jac = stability(first, second, min_tokens=min_tokens, **params)

    # (c) logit lens: every layer's last-token state of the hidden_states tuple through the full head
    ln2 = math.log(2.0)
    lens = {}
    with torch.inference_mode():
        for lang, rows in ids.items():
            ent = torch.zeros(n_layers + 1, len(rows))
            kl = torch.zeros(n_layers + 1, len(rows))
            agree = torch.zeros(n_layers + 1, len(rows), dtype=torch.bool)
            for i, r in enumerate(rows):
                out = model(input_ids=torch.tensor([r], device=device), output_hidden_states=True, use_cache=False)
                logits = out.logits.float().cpu()
                hs = [h.cpu() for h in out.hidden_states]
                lp_final = torch.log_softmax(logits[0, -1], -1)
                for layer in range(n_layers + 1):
                    if layer == n_layers:
                        lp = lp_final
                    else:
                        z = head(norm(hs[layer][0, -1].to(device))).float().cpu()
                        if softcap is not None:
                            z = torch.tanh(z / softcap) * softcap
                        lp = torch.log_softmax(z, -1)
                    p = lp.exp()
                    ent[layer, i] = -(p * lp).sum() / ln2
                    kl[layer, i] = (lp_final.exp() * (lp_final - lp)).sum()
                    agree[layer, i] = lp.argmax() == lp_final.argmax()
            lens[lang] = {"entropy": ent.numpy(), "kl": kl.numpy(), "top1_agree": agree.numpy()}
    seconds = time.perf_counter() - t0
    n_neurons = {k: int(sum(len(ix) for ix in v.values())) for k, v in neurons.items()}
    per_layer = {k: [len(v.get(layer, ())) for layer in range(n_layers)] for k, v in neurons.items()}
    out = {"pooled": pooled, "alignment": alignment, "counts": {"first": first.counts, "second": second.counts},
           "n_tokens": {"first": first.n_tokens, "second": second.n_tokens}, "n_neurons": n_neurons,
           "per_layer": per_layer, "jaccard": jac, "lens": lens}
    info = {"langs": codes, "texts_per_lang": len(texts[ref]), "neuron_min_tokens": min_tokens,
            "tokens": {k: int(v) for k, v in full_tokens.items()}, "layers": n_layers + 1}
    return seconds, out, info


def compare_whole(x: dict, v: dict) -> dict:
    import numpy as np

    checks = {}
    rel = absd = 0.0
    for lang, X in x["pooled"].items():
        Y = v["pooled"][lang]
        diff = (X - Y).abs()  # (N, L+1, d)
        scale = X.abs().amax(dim=(0, 2)).clamp_min(1e-30)  # per layer
        rel = max(rel, float((diff.amax(dim=(0, 2)) / scale).max()))
        absd = max(absd, float(diff.max()))
    checks["pooled_states_rel"] = {"delta": rel, "abs_delta": absd, "tol": TOL["pooled_states_rel"],
                                   "what": "max |Δ| of the mean-pooled hidden states over languages, texts and "
                                           "dimensions, divided by the largest |value| of that layer"}
    d, where = 0.0, ""
    for lang, m in x["alignment"].items():
        for k, vals in m.items():
            for layer, (p, q) in enumerate(zip(vals, v["alignment"][lang][k])):
                if abs(float(p) - float(q)) > d:
                    d, where = abs(float(p) - float(q)), f"{lang} {k} layer {layer}"
    checks["alignment"] = {"delta": d, "tol": TOL["alignment"], "worst": where,
                           "what": "every alignment number (cosines, linear and debiased CKA with baseline and p, "
                                   "retrieval both ways) of every language and layer"}
    diffs = [(x["counts"][h][k].long() - v["counts"][h][k].long()) for h in ("first", "second") for k in x["counts"][h]]
    same_n = x["n_tokens"] == {h: {k: int(t) for k, t in v["n_tokens"][h].items()} for h in v["n_tokens"]}
    worst = max(int(d.abs().max()) for d in diffs)
    entries = sum(d.numel() for d in diffs)
    checks["lape_counts"] = {"delta": worst, "tol": TOL["lape_counts"], "equal": bool(same_n),
                             "exact": bool(worst == 0 and same_n), "token_totals_equal": bool(same_n),
                             "mismatched_entries": int(sum(int((d != 0).sum()) for d in diffs)),
                             "entries": int(entries),
                             "what": "LAPE counts (layers × neurons) of both halves of every language at the "
                                     "analysis' batch 16: token totals exactly equal, each count within one (a "
                                     "pre-activation within ~1e-7 of zero may change sign between batched and "
                                     "single-sequence matmuls); the exact check is lape_counts_batch1"}
    if "counts_batch1" in x:  # the languages that differed, counted again by ActivationProbe at batch 1
        b1 = x["counts_batch1"]
        d1 = max(int((b1[h][k].long() - v["counts"][h][k].long()).abs().max()) for h in b1 for k in b1[h])
        checks["lape_counts_batch1"] = {
            "delta": d1, "tol": 0, "equal": d1 == 0, "langs": sorted(b1["first"]),
            "what": "the languages whose counts differed, counted again by ActivationProbe at batch 1 (the naive "
                    "side's numerics): exactly equal. Batched and single-sequence fp32 matmuls round differently, "
                    "so a pre-activation within ~1e-7 of zero can change sign and a count by one"}
    same_sets = (x["n_neurons"] == v["n_neurons"] and x["per_layer"] == v["per_layer"]
                 and x["jaccard"] == v["jaccard"])
    checks["lape_neurons"] = {"delta": 0 if same_sets else 1, "tol": 0, "equal": bool(same_sets),
                              "what": "neurons per language and layer, and the two-halves Jaccard: exactly equal"}
    d = dkl = 0.0
    agree = True
    for lang, r in x["lens"].items():
        d = max(d, float(np.abs(r["entropy"] - v["lens"][lang]["entropy"]).max()))
        dkl = max(dkl, float(np.abs(r["kl"] - v["lens"][lang]["kl"]).max()))
        agree = agree and bool(np.array_equal(r["top1_agree"], v["lens"][lang]["top1_agree"]))
    checks["lens_entropy_bits"] = {"delta": d, "tol": TOL["lens_entropy_bits"], "kl_nats_delta": dkl,
                                   "top1_agreement_equal": agree,
                                   "what": "logit-lens entropy (bits) of every text's last token at every layer"}
    return checks


# ---------------------------------------------------------------------------------------------------------
# part 2: latent language
# ---------------------------------------------------------------------------------------------------------
def _triples(a):
    from xlt.analyze.latent import WordTriple

    return [WordTriple(**t) for t in json.loads((Path(a.work) / "triples.json").read_text(encoding="utf-8"))]


def latent_xlt(a, model, tok) -> tuple[float, dict, dict]:
    from xlt.analyze.latent import latent_language

    triples = _triples(a)
    src, tgt = a.latent_pair.split("-")
    t0 = time.perf_counter()
    res = latent_language(model, tok, triples, src, tgt, REF, max_prompts=a.latent_prompts, seed=0,
                          batch_size=BATCH, max_length=LATENT_MAX_LENGTH)
    seconds = time.perf_counter() - t0
    out = {task: {k: getattr(c, k) for k in ("p_target", "p_latent", "p_source") if getattr(c, k) is not None}
           for task, c in res.tasks.items()}
    info = {"pair": a.latent_pair, "triples": len(triples), "prompts_per_task": res.settings["prompts_per_task"],
            "layers": res.num_layers + 1, "latent_peak_layer": {t: int(c.mean("p_latent").argmax())
                                                                for t, c in res.tasks.items()}}
    return seconds, out, info


def latent_naive(a, model, tok) -> tuple[float, dict, dict]:
    import numpy as np
    import torch
    from tuned_lens.nn.lenses import LogitLens

    from xlt.analyze.capture import tokenize
    from xlt.analyze.latent import LatentTask

    triples = _triples(a)
    src, tgt = a.latent_pair.split("-")
    device = next(model.parameters()).device
    pad = _pad_id(tok)
    t0 = time.perf_counter()
    task = LatentTask.build(tok, triples, src, tgt, REF, max_prompts=a.latent_prompts, seed=0,
                            max_length=LATENT_MAX_LENGTH)
    lens = LogitLens.from_model(model).to(device)
    sets_by_group = task.token_sets()
    out = {}
    with torch.inference_mode():
        for name, prompts in task.prompts.items():
            group = task.group(name)
            rows = tokenize(tok, {group: [p.text for p in prompts]}, LATENT_MAX_LENGTH).ids[group]
            sets = sets_by_group[group]
            names = list(sets[0])
            vals = {k: None for k in names}
            for s in range(0, len(rows), BATCH):
                chunk = rows[s:s + BATCH]
                t = max(len(r) for r in chunk)
                ids = torch.full((len(chunk), t), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), t), dtype=torch.long)
                for i, r in enumerate(chunk):
                    ids[i, :len(r)] = torch.tensor(r)
                    mask[i, :len(r)] = 1
                last = torch.tensor([len(r) - 1 for r in chunk])
                res = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                            use_cache=False)
                hs = res.hidden_states
                n_layers = len(hs) - 1
                for k in names:
                    if vals[k] is None:
                        vals[k] = np.zeros((n_layers + 1, len(rows)))
                for layer in range(n_layers + 1):
                    z = res.logits if layer == n_layers else lens(hs[layer], layer)  # (B, T, V)
                    lp = torch.log_softmax(z.float(), dim=-1)[torch.arange(len(chunk)), last.to(z.device)]
                    lp = lp.cpu()
                    for i in range(len(chunk)):
                        for k in names:
                            tid = [x for x in sets[s + i][k] if 0 <= x < lp.shape[-1]]
                            vals[k][layer, s + i] = float(torch.logsumexp(lp[i, tid], 0).exp()) if tid else 0.0
            out[name] = {f"p_{k}": v for k, v in vals.items()}
    seconds = time.perf_counter() - t0
    info = {"pair": a.latent_pair, "triples": len(triples), "prompts_per_task": task.settings["prompts_per_task"],
            "lens": "tuned_lens.nn.lenses.LogitLens.from_model"}
    return seconds, out, info


def compare_latent(x: dict, v: dict) -> dict:
    import numpy as np

    d = 0.0
    for task, m in x.items():
        for k, arr in m.items():
            d = max(d, float(np.abs(np.asarray(arr, dtype=np.float64) - v[task][k]).max()))
    return {"p_lang": {"delta": d, "tol": TOL["p_lang"],
                       "what": "P_target, P_latent and P_source of every prompt of both tasks at every layer"}}


# ---------------------------------------------------------------------------------------------------------
# part 3: routing
# ---------------------------------------------------------------------------------------------------------
def routing_xlt(a, model, tok) -> tuple[float, dict, dict]:
    from xlt.analyze.capture import run_probes, tokenize
    from xlt.analyze.routing import RoutingProbe, routing_divergence, routing_report

    _, codes, texts = _texts(a)
    t0 = time.perf_counter()
    probe = RoutingProbe(model)
    (caps,) = run_probes(model, tokenize(tok, texts, MAX_LENGTH), [probe], batch_size=BATCH, pad_id=_pad_id(tok),
                         show_progress=False)
    rep = routing_report(caps, ref=REF)
    seconds = time.perf_counter() - t0
    q = {lang: c.q("topk_weight") for lang, c in caps.items()}
    jsd = {lang: routing_divergence(q[REF], q[lang]).jsd.numpy() for lang in q if lang != REF}
    out = {"q": q, "jsd": jsd, "jsd_report": {k: v["jsd"] for k, v in rep["languages"].items() if "jsd" in v}}
    r0 = caps[REF]
    info = {"langs": codes, "texts_per_lang": len(texts[REF]), "layers": r0.layers, "experts": r0.n_experts,
            "top_k": r0.top_k, "family": r0.family, "router_output": r0.router_output,
            "tokens": {k: int(c.tokens) for k, c in caps.items()}}
    return seconds, out, info


def routing_naive(a, model, tok) -> tuple[float, dict, dict]:
    import numpy as np
    import torch
    from scipy.spatial.distance import jensenshannon

    from xlt.analyze.capture import tokenize

    _, codes, texts = _texts(a)
    device = next(model.parameters()).device
    k = int(model.config.num_experts_per_tok)
    t0 = time.perf_counter()
    ids = tokenize(tok, texts, MAX_LENGTH).ids
    q = {}
    with torch.inference_mode():
        for lang, rows in ids.items():
            per_seq = []
            for r in rows:
                out = model(input_ids=torch.tensor([r], device=device), output_router_logits=True, use_cache=False)
                layers = []
                for z in out.router_logits:
                    z = z.float().cpu().numpy().astype(np.float64).reshape(len(r), -1)  # (T, E)
                    if (z >= 0).all() and np.allclose(z.sum(-1), 1, atol=1e-4):  # probabilities, not logits
                        z = np.log(np.maximum(z, np.finfo(np.float32).tiny))
                    p = np.exp(z - z.max(-1, keepdims=True))
                    p /= p.sum(-1, keepdims=True)
                    top = np.argsort(-p, axis=-1, kind="stable")[:, :k]
                    w = np.zeros_like(p)
                    np.put_along_axis(w, top, np.take_along_axis(p, top, -1), -1)
                    w /= w.sum(-1, keepdims=True)
                    layers.append(w.mean(0))
                per_seq.append(np.stack(layers))
            q[lang] = np.stack(per_seq)  # (N, L, E)
    jsd = {}
    for lang, qx in q.items():
        if lang == REF:
            continue
        n, n_layers, _ = qx.shape
        jsd[lang] = np.array([np.mean([jensenshannon(q[REF][i, layer], qx[i, layer]) ** 2 for i in range(n)])
                              for layer in range(n_layers)])
    seconds = time.perf_counter() - t0
    info = {"langs": codes, "texts_per_lang": len(texts[REF]), "top_k": k}
    return seconds, {"q": q, "jsd": jsd}, info


def compare_routing(x: dict, v: dict) -> dict:
    import numpy as np

    dq = max(float(np.abs(x["q"][k].double().numpy() - v["q"][k]).max()) for k in x["q"])
    dj = max(float(np.abs(x["jsd"][k] - v["jsd"][k]).max()) for k in x["jsd"])
    dr = max(float(np.abs(np.asarray(x["jsd_report"][k]) - v["jsd"][k]).max()) for k in x["jsd_report"])
    return {"importance": {"delta": dq, "tol": TOL["importance"],
                           "what": "top-k-weight importance vector of every sequence and sparse layer"},
            "jsd": {"delta": dj, "tol": TOL["jsd"], "report_rounded_delta": dr,
                    "what": "mean JSD (nats) to eng over parallel pairs, per language and sparse layer "
                            "(report_rounded_delta: against routing_report's 6-decimal figures)"}}


def whole_xlt_after(a, model, tok, out: dict, info: dict) -> None:
    """After the clock and the peak-RSS reading: where the LAPE counts differ from the naive side's (which ran
    first), count those languages again with :class:`~xlt.analyze.neurons.ActivationProbe` at batch 1, i.e. with the
    naive side's numerics. Batched and single-sequence fp32 matmuls round differently, so an FFN pre-activation
    within ~1e-7 of zero can change sign between them and a count by one; at batch 1 the counts must be identical."""
    import torch

    from xlt.analyze.neurons import count_activations

    naive = Path(a.work) / f"whole-{a.model}-naive.pt"
    if not naive.is_file():
        return
    v = torch.load(naive, weights_only=False)
    differ = [k for k in out["counts"]["first"] if any(not torch.equal(out["counts"][h][k].long(),
                                                                      v["counts"][h][k].long())
                                                         for h in ("first", "second"))]
    del v
    info["lape_recounted_at_batch_1"] = differ
    if differ:
        _, _, texts = _texts(a)
        _, (first, second) = count_activations(model, tok, {k: texts[k] for k in differ}, max_length=MAX_LENGTH,
                                               batch_size=1, split_halves=True)
        out["counts_batch1"] = {"first": first.counts, "second": second.counts}


AFTER = {("whole", "xlt"): whole_xlt_after}
RUNNERS = {("whole", "xlt"): whole_xlt, ("whole", "naive"): whole_naive, ("latent", "xlt"): latent_xlt,
           ("latent", "naive"): latent_naive, ("routing", "xlt"): routing_xlt, ("routing", "naive"): routing_naive}
COMPARE = {"whole": compare_whole, "latent": compare_latent, "routing": compare_routing}


def child(a) -> None:
    import torch

    _setup(a)
    model, tok, load_s = _load(a)
    times = []
    for _ in range(max(1, a.repeat)):
        seconds, out, info = RUNNERS[(a.part, a.side)](a, model, tok)
        times.append(seconds)
    seconds = min(times)
    info = {**info, "all_seconds": times} if len(times) > 1 else info
    rss = peak_rss_mib()  # before saving the outputs for the comparison
    if (a.part, a.side) in AFTER:
        AFTER[(a.part, a.side)](a, model, tok, out, info)
    torch.save(out, Path(a.work) / f"{a.part}-{a.model}-{a.side}.pt")
    print("RESULT " + json.dumps({"seconds": seconds, "load_seconds": load_s, "peak_rss_mib": rss, "info": info},
                                 default=str), flush=True)


# ---------------------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------------------
def prepare_triples(a, work: Path) -> int:
    from xlt.analyze.latent import word_triples

    src, tgt = a.latent_pair.split("-")
    triples = word_triples(src, tgt, REF, corpus="bible", min_count=5)
    (work / "triples.json").write_text(json.dumps([t.__dict__ for t in triples], ensure_ascii=False),
                                       encoding="utf-8")
    return len(triples)


def prepare_moe(a, work: Path) -> tuple[Path, dict]:
    """The tiny MoE's folder and what the JSON says about it: ``--tiny-moe``, or a random one built here."""
    if a.tiny_moe:
        path = Path(a.tiny_moe)
        meta = {"source": "--tiny-moe", "folder": path.name}
        summary = path / "xlt_tiny_moe.json"
        if summary.is_file():
            s = json.loads(summary.read_text(encoding="utf-8"))
            meta["trained"] = {k: s.get(k) for k in ("family", "langs", "steps", "vocab_size", "hidden", "layers",
                                                     "experts", "top_k", "seq_len", "seed", "dev_loss")}
        return path, meta
    from xlt.analyze.tiny_moe import BIBLE_LANGS, train_bpe
    from xlt.corpora import open_corpus
    from xlt.models.tiny import tiny_moe

    corp = open_corpus("bible")
    tok = train_bpe([t for lang in BIBLE_LANGS for t in corp.texts(lang, "train")[:1000]], 8000)
    model = tiny_moe("olmoe", vocab_size=len(tok), hidden=128, layers=4, experts=8, top_k=2, seed=0,
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = work / "tiny-moe-random"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, {"source": "fallback", "note": "no --tiny-moe given: a randomly initialised (untrained) "
                  "xlt.models.tiny.tiny_moe('olmoe', hidden=128, layers=4, experts=8, top_k=2, seed=0) with a "
                  f"{len(tok)}-token byte-level BPE trained on the first 1000 Bible train verses of "
                  f"{', '.join(BIBLE_LANGS)}; its routing is not learned, so only the timings and the equality "
                  "checks mean anything"}


def _judge(row: dict) -> None:
    """Each check's ``ok`` (within its tolerance, and ``equal`` where it has one), the row's largest float |Δ| (the
    count checks are listed, not folded in), the ratio, and ``holds``: the goal met and every check ok."""
    for c in row["checks"].values():
        c["ok"] = bool(float(c["delta"]) <= c["tol"] and c.get("equal", True))
    row["max_delta"] = max(float(c["delta"]) for k, c in row["checks"].items()
                           if c["tol"] > 0 and not k.startswith("lape"))
    row["ratio"] = row["naive"]["seconds"] / row["xlt"]["seconds"]
    row["holds"] = bool(row["ratio"] >= row["goal"] and all(c["ok"] for c in row["checks"].values()))


def recheck(path: Path) -> None:
    """Judge the rows of a written result again by the current tolerances (a result written before a tolerance
    changed; the measured figures are not touched) and say so in the file."""
    res = json.loads(path.read_text(encoding="utf-8"))
    for row in res["rows"]:
        c = row.get("checks", {}).get("lape_counts")
        if c is not None and "exact" not in c:  # written when the counts had to match exactly
            c.update(exact=c["equal"], equal=c["token_totals_equal"])
        for name, check in row.get("checks", {}).items():
            check["tol"] = TOL.get(name, check["tol"])
        if "checks" in row:
            _judge(row)
    res["settings"]["tolerances"] = TOL
    res["rechecked"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                        "how": "python bench/analyze.py --recheck: ok/holds judged again by the current tolerances; "
                               "every measured figure as written"}
    print(render(res))
    path.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def render(res: dict) -> str:
    lines = ["| part | model | xlt s | naive s | × | xlt peak RSS MiB | naive peak RSS MiB | max |Δ| | goal | "
             "holds |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    notes = []
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['part']} | {r['model']} | error ({r['error_side']}) | | | | | | "
                         f"≥ {r['goal']:g}× | no |")
            notes.append(f"{r['part']} {r['model']} {r['error_side']}: {r['error'][-300:]}")
            continue
        x, v = r["xlt"], r["naive"]
        bad = [k for k, c in r["checks"].items() if not c["ok"]]
        holds = "yes" if r["ratio"] >= r["goal"] and not bad else (
            "no (" + ", ".join((["speed"] if r["ratio"] < r["goal"] else []) + bad) + ")")
        lines.append(f"| {r['part']} | {r['model']} | {x['seconds']:.2f} | {v['seconds']:.2f} | {r['ratio']:.1f} | "
                     f"{x['peak_rss_mib']:.0f} | {v['peak_rss_mib']:.0f} | {_fmt(r['max_delta'])} | "
                     f"≥ {r['goal']:g}× | {holds} |")
    text = "\n".join(lines) + "\n"
    for r in res["rows"]:
        if "checks" not in r:
            continue
        text += (f"\n{r['part']} / {r['model']} (load: xlt {r['xlt']['load_seconds']:.1f} s, naive "
                 f"{r['naive']['load_seconds']:.1f} s, not timed)\n")
        for k, c in r["checks"].items():
            extra = "".join(f", {e} {_fmt(c[e]) if isinstance(c[e], float) else c[e]}"
                            for e in ("abs_delta", "kl_nats_delta", "top1_agreement_equal", "report_rounded_delta",
                                      "mismatched_entries", "entries", "langs", "worst")
                            if e in c)
            text += f"  {k}: |Δ| {_fmt(float(c['delta']))} (tol {c['tol']:g}) {'ok' if c['ok'] else 'FAILS'}{extra}\n"
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text


def _scrub(text: str) -> str:
    """No path of this machine in what is written (tests/test_no_machine_paths.py)."""
    from xlt.util import scrub_machine_paths

    return scrub_machine_paths(text, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=("all",) + PARTS)
    ap.add_argument("--models", default="smollm2,gemma3", help="models of the whole-analysis part")
    ap.add_argument("--langs", default=LANGS, help="languages (eng, the reference, is always included)")
    ap.add_argument("--n", type=int, default=300, help="aligned verses per language")
    ap.add_argument("--latent-model", default="smollm2")
    ap.add_argument("--latent-pair", default="fra-cmn", help="SRC-TGT of the latent-language prompts")
    ap.add_argument("--latent-prompts", type=int, default=100, help="prompts per task at most (the analysis' default)")
    ap.add_argument("--tiny-moe", default=None, help="folder of a trained tiny MoE [default: a random one]")
    ap.add_argument("--neuron-min-tokens", type=int, default=1000,
                    help="LAPE's floor per language and half; lowered to what the texts have when fewer")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every child")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side's work in its process; the fastest counts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "analyze.json"))
    ap.add_argument("--work", default=None, help="folder for the children's outputs [default: a temporary one]")
    ap.add_argument("--recheck", default=None, metavar="JSON",
                    help="judge a written result again by this script's tolerances (no model runs), rewrite it")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--part-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.recheck:
        return recheck(Path(a.recheck))
    if a.child:
        a.part = a.part_child
        return child(a)
    import torch

    from xlt.util import machine_info

    parts = PARTS if a.part == "all" else (a.part,)
    work = Path(a.work or tempfile.mkdtemp(prefix="xlt-bench-analyze-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"benchmark": "analyze", "settings": {
        "parts": list(parts), "models": a.models.split(","), "langs": a.langs, "n": a.n, "ref": REF,
        "batch_size": BATCH, "max_length": MAX_LENGTH, "threads": a.threads or torch.get_num_threads(),
        "repeat": a.repeat,
        "device": a.device, "latent": {"model": a.latent_model, "pair": a.latent_pair, "prompts": a.latent_prompts,
                                       "max_length": LATENT_MAX_LENGTH},
        "analyze_options": {"analyses": "alignment,neurons,lens", "ablation_texts": 0, "heldout": 0,
                            "neuron_min_tokens": a.neuron_min_tokens, "out": None},
        "tolerances": TOL, "goals": GOALS, "timing": "perf_counter around the work only; model load apart; "
                                                       "peak RSS = the child process's VmHWM (model load included)"}}
    jobs = []
    for part in parts:
        if part == "whole":
            jobs += [(part, m, None) for m in a.models.split(",") if m]
        elif part == "latent":
            t0 = time.perf_counter()
            res["settings"]["latent"]["triples"] = prepare_triples(a, work)
            res["settings"]["latent"]["triples_seconds"] = round(time.perf_counter() - t0, 1)
            jobs.append((part, a.latent_model, None))
        else:
            path, meta = prepare_moe(a, work)
            res["settings"]["tiny_moe"] = meta
            jobs.append((part, "tiny-moe" if a.tiny_moe else "tiny-moe-random", path))
    rows = []
    for part, model, path in jobs:
        row: dict = {"part": part, "model": model, "goal": GOALS[part]}
        for side in SIDES:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--part-child", part, "--side", side,
                   "--model", model, "--work", str(work), "--langs", a.langs, "--n", str(a.n),
                   "--latent-pair", a.latent_pair, "--latent-prompts", str(a.latent_prompts),
                   "--neuron-min-tokens", str(a.neuron_min_tokens), "--device", a.device, "--repeat", str(a.repeat)]
            cmd += ["--threads", str(a.threads)] if a.threads else []
            cmd += ["--model-path", str(path)] if path is not None else []
            p = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                row.update(error=_scrub((p.stderr or p.stdout).strip()[-2000:]), error_side=side)
                print(f"{part} {model} {side} failed:\n{row['error'][-1500:]}", flush=True)
                break
            row[side] = json.loads(line[7:])
            print(f"{part} {model} {side}: {row[side]['seconds']:.2f} s, peak RSS {row[side]['peak_rss_mib']:.0f} MiB",
                  flush=True)
        if "error" not in row:
            x = torch.load(work / f"{part}-{model}-xlt.pt", weights_only=False)
            v = torch.load(work / f"{part}-{model}-naive.pt", weights_only=False)
            checks = COMPARE[part](x, v)
            row["checks"] = checks
            _judge(row)
            for f in (f"{part}-{model}-xlt.pt", f"{part}-{model}-naive.pt"):
                (work / f).unlink(missing_ok=True)
        rows.append(row)
    res["rows"] = rows
    argv, skip = [], False  # the command as run, without this machine's paths
    for x in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if x.startswith(("--out=", "--work=", "--tiny-moe=")):
            argv.append(x.split("=", 1)[0] + "=PATH" if x.startswith("--tiny-moe=") else "")
            continue
        if x in ("--out", "--work", "--tiny-moe"):
            skip = True
            if x == "--tiny-moe":
                argv.append("--tiny-moe PATH")
            continue
        argv.append(x)
    res["command"] = " ".join(["python bench/analyze.py"] + [x for x in argv if x])
    res["machine"] = machine_info(("torch", "transformers", "tokenizers", "numpy", "scipy", "tuned-lens",
                                   "safetensors"))
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    text = render(res)
    print("\n" + text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_scrub(json.dumps(res, indent=2, ensure_ascii=False, default=str)) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    if a.work is None:  # the temporary folder made here (triples, the fallback MoE)
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
