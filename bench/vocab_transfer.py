"""Benchmark: vocabulary transfer SmolLM2-135M -> a Bible language, xlt against the reference packages.

    python bench/vocab_transfer.py [--target sw] [--vocab-size 8000] [--train-steps 30] [--out bench/results]

Every method runs in its own subprocess (so peak RSS is its own) on the same inputs: the same target
tokenizer, the same fastText models (saved .bin), the same dictionary. Measured per method:

* ``map``: the mapping step with word vectors given (load vectors + build the new embedding matrix),
  imports excluded (reported apart as ``import_seconds``);
* ``full``: the whole transfer including fastText training, with an empty cache; the size of the largest
  cache file left behind is reported;
* the wechsel and focus mapping steps and the references' are run ``--repeats`` times, alternating, and
  the median is reported (all runs are in the JSON);
* max |difference| to the reference package's matrix (wechsel: xlt's ``wechsel_faithful`` mode; focus:
  xlt's focus), over rows that are not random fallbacks (the packages draw those from other RNGs);
* bits/byte on held-out text at step 0; with ``--train-steps N`` also a short ``xlt adapt`` run and the
  steps each init needs to reach random init's final bits/byte.

The reference packages (``wechsel``, ``deepfocus``) are used when importable, else reported as missing.
Prints a table and writes ``vocab_transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
XLT_METHODS = ["random", "mean", "overlap", "wechsel", "focus", "transtok"]


def _rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not inherit the parent's across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _largest_file_mb(root: Path) -> float:
    sizes = [p.stat().st_size for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return max(sizes, default=0) / 1e6


# ---------------------------------------------------------------------------------------------------------
def worker(args) -> None:
    """One method in a fresh process; prints one JSON line."""
    import torch
    from transformers import AutoTokenizer

    work = Path(args.work)
    meta = json.loads((work / "inputs.json").read_text())
    src_tok = AutoTokenizer.from_pretrained(meta["source"])
    tgt_tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    E = np.load(work / "source_embeddings.npy")
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    os.environ["XLT_CACHE"] = str(cache)
    os.environ["XDG_CACHE_HOME"] = str(cache)
    # imports are timed apart: a user imports a library once per session, and the reference's imports
    # (sklearn, gensim, nltk) alone take seconds
    t_import = time.perf_counter()
    if args.impl == "xlt":
        import xlt.vocab.similarity  # noqa: F401  (registers the inits)
        from xlt.corpora import open_corpus
        from xlt.vocab import TransferContext, build_mapping, mix_rows
    elif args.method == "wechsel":
        import fasttext
        from wechsel import WECHSEL, train_embeddings
    elif args.method == "focus":
        from deepfocus import FOCUS
    import_seconds = time.perf_counter() - t_import
    t0 = time.perf_counter()
    fallback: list[int] = []
    if args.impl == "xlt":
        opts = {}
        if args.mode == "map":
            opts = {"source_vectors": str(work / "src_words.bin"), "target_vectors": str(work / "tgt_words.bin"),
                    "focus_vectors": str(work / "tgt_tokens.bin")}
        opts["dictionary"] = str(work / "dictionary.tsv")
        if args.method == "wechsel" and args.faithful:
            opts["wechsel_faithful"] = True
        ctx = TransferContext(src_tok, tgt_tok, seed=0, corpus=open_corpus("bible"), source_lang=meta["source_lang"],
                              target_lang=meta["target_lang"], options=opts)
        mapping = build_mapping(args.method, ctx)
        out = mix_rows(mapping, torch.from_numpy(E), 0).numpy()
        fallback = [i for i, e in enumerate(mapping.evidence) if e in ("random", "mean")]
    elif args.method == "wechsel":
        if args.mode == "map":
            s_ft, t_ft = fasttext.load_model(str(work / "src_words.bin")), fasttext.load_model(str(work / "tgt_words.bin"))
        else:  # the package's own helper, default settings (20 epochs), our word splitter instead of NLTK Punkt
            from xlt.vocab.wordvec import word_tokenize

            s_ft = train_embeddings(str(work / "src_train.txt"), tokenize_fn=word_tokenize)
            t_ft = train_embeddings(str(work / "tgt_train.txt"), tokenize_fn=word_tokenize)
        w = WECHSEL(s_ft, t_ft, bilingual_dictionary=str(work / "dictionary.tsv"))
        out, info = w.apply(src_tok, tgt_tok, E.copy())
        vocab = tgt_tok.get_vocab()
        fallback = [vocab[t] for t in info.not_found if t in vocab]
    elif args.method == "focus":
        kw = ({"fasttext_model_path": str(work / "tgt_tokens.bin")} if args.mode == "map"
              else {"target_training_data_path": str(work / "tgt_train.txt")})
        out = FOCUS(target_tokenizer=tgt_tok, source_tokenizer=src_tok, source_embeddings=torch.from_numpy(E),
                    verbosity="silent", **kw).numpy()
    else:
        raise SystemExit(f"no reference for {args.method}")
    seconds = time.perf_counter() - t0
    np.save(work / f"out_{args.impl}_{args.method}_{args.mode}{'_faithful' if args.faithful else ''}.npy", out.astype(np.float32))
    tag = f"{args.impl}_{args.method}_{args.mode}{'_faithful' if args.faithful else ''}"
    (work / f"fallback_{tag}.json").write_text(json.dumps(sorted(int(i) for i in fallback)))
    print(json.dumps({"seconds": seconds, "import_seconds": import_seconds, "peak_rss_mb": _rss_mb(), "largest_cache_file_mb": _largest_file_mb(cache),
                      "fallback_rows": len(fallback)}))


def run_worker(work: Path, impl: str, method: str, mode: str, faithful: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__)), "worker", "--work", str(work), "--impl", impl, "--method", method, "--mode", mode]
    if faithful:
        cmd.append("--faithful")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
def prepare_inputs(work: Path, target: str, vocab_size: int) -> dict:
    from xlt.corpora import BibleCorpus
    from xlt.languages import resolve
    from xlt.models import load_model, load_tokenizer, prepare
    from xlt.vocab import train_tokenizer
    from xlt.vocab.dictionary import induce_from_parallel
    from xlt.vocab.similarity import token_vectors, word_vectors
    from xlt.vocab.registry import TransferContext
    from xlt.vocab.wordvec import word_tokenize

    src_dir = prepare("smollm2")
    src_tok = load_tokenizer(src_dir)
    bible = BibleCorpus()
    tgt = resolve(target).code
    tok = train_tokenizer(src_tok, bible.texts(tgt, "train"), vocab_size)
    tok.save_pretrained(work / "tokenizer")
    model = load_model(src_dir)
    np.save(work / "source_embeddings.npy", model.get_input_embeddings().weight.detach().numpy())
    for side, lang in (("src", "eng"), ("tgt", tgt)):
        (work / f"{side}_train.txt").write_text("\n".join(" ".join(word_tokenize(t)) for t in bible.texts(lang, "train")) + "\n",
                                               encoding="utf-8")
    induce_from_parallel(bible, "eng", tgt).save_tsv(work / "dictionary.tsv")
    ctx = TransferContext(src_tok, tok, seed=0, corpus=bible, source_lang="eng", target_lang=tgt)
    word_vectors(ctx, "source").ft.save_model(str(work / "src_words.bin"))
    word_vectors(ctx, "target").ft.save_model(str(work / "tgt_words.bin"))
    token_vectors(ctx).ft.save_model(str(work / "tgt_tokens.bin"))
    meta = {"source": str(src_dir), "source_lang": "eng", "target_lang": tgt, "vocab_size": vocab_size}
    (work / "inputs.json").write_text(json.dumps(meta))
    return meta


def documented_exclusions(work: Path, meta: dict, method: str) -> set[int]:
    """Rows excluded from the equivalence check, with their reasons: wechsel rows with a (near-)tie at the 10th
    neighbour (the reference's np.argpartition order is unspecified, and it solves Procrustes in float32, so
    gaps under 1e-5 can flip); focus rows whose deepfocus canonical form is ambiguous (partial UTF-8 -> U+FFFD,
    whitespace-only -> "", so deepfocus copies them from another source token) and the rows whose sparsemax
    mixes such a token as an anchor."""
    from transformers import AutoTokenizer

    src = AutoTokenizer.from_pretrained(meta["source"])
    tgt = AutoTokenizer.from_pretrained(work / "tokenizer")
    if method == "focus":
        from xlt.vocab.baselines import overlap_pairs
        from xlt.vocab.similarity import focus_mapping
        from xlt.vocab.wordvec import load_word_vectors

        def ambiguous(tok):
            return {i for i in range(len(tok)) if "\ufffd" in tok.decode(i) or not tok.decode(i).strip()}
        amb = ambiguous(tgt)
        pairs = overlap_pairs(src, tgt)
        bad_src = {pairs[t] for t in amb if t in pairs}
        w = focus_mapping(src, tgt, load_word_vectors(work / "tgt_tokens.bin")).weights.tocsr()
        mixing = {i for i in range(w.shape[0]) if bad_src & set(w.indices[w.indptr[i]:w.indptr[i + 1]].tolist())}
        return amb | mixing
    from xlt.vocab.dictionary import Dictionary
    from xlt.vocab.similarity import align_spaces, decoded_tokens
    from xlt.vocab.wordvec import load_word_vectors

    sv, tv = load_word_vectors(work / "src_words.bin"), load_word_vectors(work / "tgt_words.bin")
    rot, _ = align_spaces(sv, tv, list(Dictionary.load_tsv(work / "dictionary.tsv").pairs))
    S = sv.vectors(decoded_tokens(src)).astype(np.float64) @ rot
    T = tv.vectors(decoded_tokens(tgt)).astype(np.float64)
    S /= np.where(np.linalg.norm(S, axis=1, keepdims=True) > 0, np.linalg.norm(S, axis=1, keepdims=True), 1)
    T /= np.where(np.linalg.norm(T, axis=1, keepdims=True) > 0, np.linalg.norm(T, axis=1, keepdims=True), 1)
    ties = set()
    for s0 in range(0, len(T), 1024):
        top = -np.sort(-(T[s0:s0 + 1024] @ S.T), axis=1)[:, :11]
        ties |= {s0 + i for i in np.flatnonzero(np.abs(top[:, 9] - top[:, 10]) < 1e-5)}
    return ties


def bpb_step0(work: Path, meta: dict, matrices: dict[str, Path], max_bytes: int = 12000) -> dict:
    import torch

    from xlt.corpora import BibleCorpus
    from xlt.eval import bits_per_byte, truncate_texts
    from xlt.models import load_model, load_tokenizer

    model = load_model(meta["source"])
    src_tok = load_tokenizer(meta["source"])
    tgt_tok = load_tokenizer(work / "tokenizer")
    dev = truncate_texts(BibleCorpus().texts(meta["target_lang"], "dev"), max_bytes)
    out = {"original model (own tokenizer)": bits_per_byte(model, src_tok, dev).bits_per_byte}
    old_in = model.get_input_embeddings()
    for name, path in matrices.items():
        E = torch.from_numpy(np.load(path))
        emb = torch.nn.Embedding(E.shape[0], E.shape[1])
        emb.weight.data.copy_(E)
        model.set_input_embeddings(emb)
        head = torch.nn.Linear(E.shape[1], E.shape[0], bias=False)
        head.weight = emb.weight
        model.set_output_embeddings(head)
        model.config.vocab_size = E.shape[0]
        out[name] = bits_per_byte(model, tgt_tok, dev).bits_per_byte
    model.set_input_embeddings(old_in)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--work", required=True)
    w.add_argument("--impl", choices=["xlt", "ref"], required=True)
    w.add_argument("--method", required=True)
    w.add_argument("--mode", choices=["map", "full"], required=True)
    w.add_argument("--faithful", action="store_true")
    ap.add_argument("--target", default="sw")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--train-steps", type=int, default=0, help="also run xlt adapt for N steps per init (0: skip)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="runs of each timed mapping step (wechsel, focus and their references), alternated; median reported")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.cmd == "worker":
        return worker(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import importlib.util

    have_ref = {m: importlib.util.find_spec(p) is not None for m, p in (("wechsel", "wechsel"), ("focus", "deepfocus"))}
    work = Path(tempfile.mkdtemp(prefix="xlt-bench-"))
    t0 = time.time()
    meta = prepare_inputs(work, args.target, args.vocab_size)
    print(f"inputs ready in {time.time() - t0:.0f}s ({work})", file=sys.stderr)
    results: dict = {"settings": vars(args) | meta, "methods": {}, "reference": {}}
    matrices = {}
    for m in XLT_METHODS:
        r = {mode: run_worker(work, "xlt", m, mode) for mode in ("map", "full")}
        results["methods"][m] = r
        matrices[m] = work / f"out_xlt_{m}_map.npy"
        print(f"xlt {m}: {json.dumps(r)}", file=sys.stderr)
    for m, ok in have_ref.items():
        if not ok:
            results["reference"][m] = {"error": "package not installed"}
            continue
        ref = {mode: run_worker(work, "ref", m, mode) for mode in ("map", "full")}
        ours_name = f"out_xlt_{m}_map{'_faithful' if m == 'wechsel' else ''}.npy"
        if m == "wechsel":
            ref["xlt_faithful_map"] = run_worker(work, "xlt", m, "map", faithful=True)
        if "error" not in ref["map"]:
            a, b = np.load(work / ours_name), np.load(work / f"out_ref_{m}_map.npy")
            ours_tag = "xlt_wechsel_map_faithful" if m == "wechsel" else f"xlt_{m}_map"
            skip = set(json.loads((work / f"fallback_ref_{m}_map.json").read_text())) | set(
                json.loads((work / f"fallback_{ours_tag}.json").read_text()))
            keep = np.array([i for i in range(len(a)) if i not in skip])
            diff = np.abs(a[keep] - b[keep])
            ref["max_abs_diff"] = float(diff.max())
            ref["rows_over_1e-4"] = int((diff.max(1) > 1e-4).sum())
            ref["rows_compared"] = int(len(keep))
            excl = documented_exclusions(work, meta, m)
            keep2 = np.array([i for i in keep if i not in excl])
            d2 = np.abs(a[keep2] - b[keep2])
            ref["documented_exclusions"] = len(excl & set(keep.tolist()))
            ref["max_abs_diff_after_exclusions"] = float(d2.max())
            ref["rows_over_1e-4_after_exclusions"] = int((d2.max(1) > 1e-4).sum())
        results["reference"][m] = ref
        print(f"ref {m}: {json.dumps(ref)}", file=sys.stderr)
    if args.repeats > 1:  # the speed comparisons again, alternating tools, so load on the machine hits both
        pairs = [("xlt", "wechsel", False), ("xlt", "wechsel", True), ("ref", "wechsel", False), ("xlt", "focus", False),
                 ("ref", "focus", False)]
        runs: dict = {p: [] for p in pairs}
        for _ in range(args.repeats - 1):
            for impl, m, faithful in pairs:
                if impl == "ref" and not have_ref[m]:
                    continue
                r = run_worker(work, impl, m, "map", faithful)
                if "seconds" in r:
                    runs[(impl, m, faithful)].append(r["seconds"])
        for (impl, m, faithful), extra in runs.items():
            if impl == "xlt":
                target = results["methods"][m]["map"] if not faithful else results["reference"].get(m, {}).get("xlt_faithful_map")
            else:
                target = results["reference"].get(m, {}).get("map")
            if target and "seconds" in target:
                target["seconds_runs"] = [target["seconds"], *extra]
                target["seconds"] = float(np.median(target["seconds_runs"]))
    results["bits_per_byte_step0"] = bpb_step0(work, meta, matrices)
    if args.train_steps:
        from xlt.adapt import run

        res = run(source=meta["source"], target=meta["target_lang"], corpus="bible", init=",".join(XLT_METHODS),
                  out=work / "adapt", steps=args.train_steps, stage1_steps=args.train_steps // 2, batch_size=4, seq_len=128,
                  eval_every=max(1, args.train_steps // 5), eval_max_bytes=12000, vocab_size=args.vocab_size,
                  init_options={"dictionary": str(work / "dictionary.tsv")}, overwrite=True, show_progress=False)
        results["training"] = res.metrics["summary"]
    _print_table(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab_transfer.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'vocab_transfer.json'}")


def _print_table(r: dict) -> None:
    def f(x, nd=2):
        return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    print(f"\n{'method':10} {'map s':>8} {'map RSS MB':>11} {'full s':>8} {'full RSS MB':>12} {'cache MB':>9} {'bpb@0':>7}")
    bpb = r["bits_per_byte_step0"]
    print(f"{'original':10} {'':>8} {'':>11} {'':>8} {'':>12} {'':>9} {f(bpb['original model (own tokenizer)'], 3):>7}")
    for m, v in r["methods"].items():
        mp, fu = v["map"], v["full"]
        print(f"{m:10} {f(mp.get('seconds')):>8} {f(mp.get('peak_rss_mb'), 0):>11} {f(fu.get('seconds')):>8} "
              f"{f(fu.get('peak_rss_mb'), 0):>12} {f(fu.get('largest_cache_file_mb'), 1):>9} {f(bpb.get(m), 3):>7}")
    for m, v in r["reference"].items():
        if "error" in v:
            print(f"ref {m:6} {v['error']}")
            continue
        mp, fu = v["map"], v["full"]
        ours = (v.get("xlt_faithful_map") or r["methods"][m]["map"])
        ratio = lambda a, b: (a / b) if a and b else None
        print(f"ref {m:6} {f(mp.get('seconds')):>8} {f(mp.get('peak_rss_mb'), 0):>11} {f(fu.get('seconds')):>8} "
              f"{f(fu.get('peak_rss_mb'), 0):>12} {f(fu.get('largest_cache_file_mb'), 1):>9}   "
              f"map speed-up x{f(ratio(mp.get('seconds'), ours.get('seconds')), 1)}"
              + (f" (faithful; default x{f(ratio(mp.get('seconds'), r['methods'][m]['map'].get('seconds')), 1)})"
                 if v.get("xlt_faithful_map") else "") + ", "
              f"full speed-up x{f(ratio(fu.get('seconds'), r['methods'][m]['full'].get('seconds')), 1)}, "
              f"max|diff| {f(v.get('max_abs_diff'), 6)} over {v.get('rows_compared')} rows ({v.get('rows_over_1e-4')} > 1e-4); "
              f"without the {v.get('documented_exclusions')} documented rows: {f(v.get('max_abs_diff_after_exclusions'), 6)} "
              f"({v.get('rows_over_1e-4_after_exclusions')} > 1e-4)")
    if "training" in r:
        print(f"\n{'init':10} {'bpb@0':>7} {'bpb end':>8} {'steps to random final':>22} {'ratio':>6}")
        for m, v in r["training"].items():
            print(f"{m:10} {f(v['bpb_step0'], 3):>7} {f(v['bpb_final'], 3):>8} {f(v.get('steps_to_random_final'), 1):>22} "
                  f"{'step 0' if v.get('reached_at_step0') else f(v.get('steps_saved_ratio'), 2):>6}")


if __name__ == "__main__":
    main()
