"""Benchmark: vocabulary transfer SmolLM2-135M -> Bible languages, xlt against the reference packages and the papers.

    python bench/vocab_transfer.py [--target sw[,ko,ru]] [--vocab-size 8000] [--checks-only] [--train-steps 30]

Every method runs in its own subprocess (so peak RSS is its own) on the same inputs: the same target
tokenizer, the same fastText models (saved .bin), the same dictionary. Measured per target language:

* equivalence, on every row of the target vocabulary (``equivalence`` in the JSON; ``--checks-only`` measures
  only this): xlt's wechsel (default and ``wechsel_faithful``) and focus mappings against plain dense
  implementations of the papers' definitions (``tests/vocab_oracle.py``); the reference packages' matrices
  against the same oracles run with the packages' own rules (WECHSEL: Procrustes solved in float32;
  deepfocus: its decode-based token overlap), random fallback rows reproduced with the packages' generators;
  and xlt against the packages, every row either compared or excluded with its reason;
* ``map``: the mapping step with word vectors given (load vectors + build the new embedding matrix),
  imports excluded (reported apart as ``import_seconds``);
* ``full``: the whole transfer including fastText training, with an empty cache; the size of the largest
  cache file left behind is reported;
* the wechsel and focus mapping steps and the references' are run ``--repeats`` times, alternating, and
  the median is reported (all runs are in the JSON);
* bits/byte on held-out text at step 0; with ``--train-steps N`` also a short ``xlt adapt`` run and the
  steps each init needs to reach random init's final bits/byte.

The reference packages (``wechsel``, ``deepfocus``) are used when importable, else reported as missing.
Prints a table and writes ``vocab_transfer_<target>.json`` (with ``xlt.util.machine_info()``) to ``--out``.
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
sys.path.insert(0, str(HERE.parent / "tests"))  # the dense oracles live beside the tests that check xlt against them
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
        opts = {}  # each method gets only its own options (they are typed and checked)
        if args.method == "wechsel":
            opts["dictionary"] = str(work / "dictionary.tsv")
            if args.mode == "map":
                opts |= {"source_vectors": str(work / "src_words.bin"), "target_vectors": str(work / "tgt_words.bin")}
            if args.faithful:
                opts["wechsel_faithful"] = True
        elif args.method == "focus" and args.mode == "map":
            opts["focus_vectors"] = str(work / "tgt_tokens.bin")
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
        vocab, s_vocab = tgt_tok.get_vocab(), src_tok.get_vocab()
        fallback = [vocab[t] for t in info.not_found if t in vocab]
    elif args.method == "focus":
        kw = ({"fasttext_model_path": str(work / "tgt_tokens.bin")} if args.mode == "map"
              else {"target_training_data_path": str(work / "tgt_train.txt")})
        out = FOCUS(target_tokenizer=tgt_tok, source_tokenizer=src_tok, source_embeddings=torch.from_numpy(E),
                    verbosity="silent", **kw).numpy()
    else:
        raise SystemExit(f"no reference for {args.method}")
    seconds = time.perf_counter() - t0
    tag = f"{args.impl}_{args.method}_{args.mode}{'_faithful' if args.faithful else ''}"
    np.save(work / f"out_{tag}.npy", np.asarray(out))
    if args.impl == "xlt":  # the mapping itself, for the row-by-row checks against the dense oracles
        mapping.save(work / f"mapping_{tag}.npz")
    elif args.method == "wechsel" and args.mode == "map":  # the neighbours the package picked, for its ties
        picked = {vocab[t]: [s_vocab[x] for x in v[0]] for t, v in info.sources.items()}
        (work / "ref_wechsel_neighbours.json").write_text(json.dumps(picked))
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


# -- equivalence: xlt, the reference packages and the dense oracles, on every row ------------------------------
def wechsel_equivalence(work: Path, src, tgt, E: np.ndarray, have_ref: bool) -> dict:
    import fasttext

    from vocab_oracle import WECHSEL_TOL, dense_wechsel, procrustes_rotation, wechsel_against_reference, xlt_vs_oracle
    from xlt.vocab.dictionary import Dictionary
    from xlt.vocab.mapping import TransferMapping

    s_ft, t_ft = fasttext.load_model(str(work / "src_words.bin")), fasttext.load_model(str(work / "tgt_words.bin"))
    pairs = list(Dictionary.load_tsv(work / "dictionary.tsv").pairs)
    r64 = procrustes_rotation(s_ft, t_ft, pairs)
    out: dict = {"oracle": "tests/vocab_oracle.py dense_wechsel: float64 Procrustes and cosines, top-10 by "
                           "(cosine desc, source id asc), softmax(cos/0.1)"}
    mappings, oracles = {}, {}
    for name, faithful in (("default", False), ("faithful", True)):
        t0 = time.perf_counter()
        oracles[name] = dense_wechsel(src, tgt, s_ft, t_ft, r64, copy_overlap=not faithful)
        mappings[name] = TransferMapping.load(work / f"mapping_xlt_wechsel_map{'_faithful' if faithful else ''}.npz")
        out[f"xlt_{name}_vs_oracle"] = xlt_vs_oracle(mappings[name], oracles[name], E, WECHSEL_TOL, True) | {
            "oracle_seconds": time.perf_counter() - t0, "rows_with_a_tie_at_the_10th_neighbour": len(oracles[name].ties)}
    if have_ref and (work / "out_ref_wechsel_map.npy").exists():
        picked = {int(k): v for k, v in json.loads((work / "ref_wechsel_neighbours.json").read_text()).items()}
        out |= wechsel_against_reference(src, tgt, s_ft, t_ft, pairs, E, np.load(work / "out_ref_wechsel_map.npy"),
                                         picked, mappings["faithful"], oracles["faithful"])
    return out


def focus_equivalence(work: Path, src, tgt, E: np.ndarray, have_ref: bool) -> dict:
    import fasttext

    from vocab_oracle import FOCUS_TOL, dense_focus, focus_against_reference, xlt_vs_oracle
    from xlt.vocab.mapping import TransferMapping

    ft = fasttext.load_model(str(work / "tgt_tokens.bin"))
    t0 = time.perf_counter()
    paper = dense_focus(src, tgt, ft)
    out = {"oracle": "tests/vocab_oracle.py dense_focus: byte-identical tokens copied; the rest with a token-level "
                     "fastText vector = sparsemax over float64 cosines to the copied tokens that have one",
           "anchors": len(paper.anchors)}
    m = TransferMapping.load(work / "mapping_xlt_focus_map.npz")
    out["xlt_vs_oracle"] = xlt_vs_oracle(m, paper, E, FOCUS_TOL, False) | {"oracle_seconds": time.perf_counter() - t0}
    if have_ref and (work / "out_ref_focus_map.npy").exists():
        out |= focus_against_reference(src, tgt, ft, E, np.load(work / "out_ref_focus_map.npy"), m, paper)
    return out


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


def run_target(args, target: str, have_ref: dict[str, bool]) -> dict:
    """Everything for one target language; returns the JSON record."""
    from transformers import AutoTokenizer

    from xlt.languages import resolve
    from xlt.util import machine_info

    work = Path(args.work) / resolve(target).code if args.work else Path(tempfile.mkdtemp(prefix="xlt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    meta = json.loads((work / "inputs.json").read_text()) if (work / "inputs.json").exists() else None
    if not meta or meta.get("vocab_size") != args.vocab_size:
        meta = prepare_inputs(work, target, args.vocab_size)
    print(f"{meta['target_lang']}: inputs ready in {time.time() - t0:.0f}s ({work})", file=sys.stderr)
    # a previous run's outputs, never to be compared by mistake
    for old in [*work.glob("out_*.npy"), *work.glob("mapping_*.npz"), *work.glob("ref_wechsel_neighbours.json")]:
        old.unlink()
    settings = {"target": meta["target_lang"], "source": "smollm2", "source_lang": meta["source_lang"],
                "vocab_size": args.vocab_size, "checks_only": args.checks_only, "repeats": args.repeats,
                "train_steps": args.train_steps}
    results: dict = {"settings": settings, "machine": machine_info(), "methods": {}, "reference": {}}
    matrices = {}
    modes = ("map",) if args.checks_only else ("map", "full")
    for m in (["wechsel", "focus"] if args.checks_only else XLT_METHODS):
        r = {mode: run_worker(work, "xlt", m, mode) for mode in modes}
        results["methods"][m] = r
        matrices[m] = work / f"out_xlt_{m}_map.npy"
        print(f"xlt {m}: {json.dumps(r)}", file=sys.stderr)
    for m, ok in have_ref.items():
        if not ok:
            results["reference"][m] = {"error": "package not installed"}
            continue
        ref = {mode: run_worker(work, "ref", m, mode) for mode in modes}
        if m == "wechsel":
            ref["xlt_faithful_map"] = run_worker(work, "xlt", m, "map", faithful=True)
        results["reference"][m] = ref
        print(f"ref {m}: {json.dumps(ref)}", file=sys.stderr)
    if "error" in results["reference"].get("wechsel", {}):  # the oracle comparison still needs xlt's faithful mapping
        results["reference"]["wechsel"]["xlt_faithful_map"] = run_worker(work, "xlt", "wechsel", "map", faithful=True)
    src = AutoTokenizer.from_pretrained(meta["source"])
    tgt = AutoTokenizer.from_pretrained(work / "tokenizer")
    E = np.load(work / "source_embeddings.npy")
    settings |= {"source_vocab": len(src), "target_vocab": len(tgt)}  # BPE stops early where merges run out (hi)
    ok = {m: have_ref[m] and "error" not in results["reference"][m].get("map", {"error": 1}) for m in have_ref}
    results["equivalence"] = {}
    for m, check in (("wechsel", wechsel_equivalence), ("focus", focus_equivalence)):
        runs = (results["methods"][m]["map"], results["reference"].get(m, {}).get("xlt_faithful_map", {}))
        failed = [r["error"] for r in runs if "error" in r]
        results["equivalence"][m] = {"error": failed[0]} if failed else check(work, src, tgt, E, ok[m])
    if args.checks_only:
        return results
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
                target_r = results["methods"][m]["map"] if not faithful else results["reference"].get(m, {}).get("xlt_faithful_map")
            else:
                target_r = results["reference"].get(m, {}).get("map")
            if target_r and "seconds" in target_r:
                target_r["seconds_runs"] = [target_r["seconds"], *extra]
                target_r["seconds"] = float(np.median(target_r["seconds_runs"]))
    results["bits_per_byte_step0"] = bpb_step0(work, meta, matrices)
    if args.train_steps:
        from xlt.adapt import run

        res = run(source=meta["source"], target=meta["target_lang"], corpus="bible", init=",".join(XLT_METHODS),
                  out=work / "adapt", steps=args.train_steps, stage1_steps=args.train_steps // 2, batch_size=4, seq_len=128,
                  eval_every=max(1, args.train_steps // 5), eval_max_bytes=12000, vocab_size=args.vocab_size,
                  init_options={"dictionary": str(work / "dictionary.tsv")}, overwrite=True, show_progress=False)
        results["training"] = res.metrics["summary"]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    w.add_argument("--work", required=True)
    w.add_argument("--impl", choices=["xlt", "ref"], required=True)
    w.add_argument("--method", required=True)
    w.add_argument("--mode", choices=["map", "full"], required=True)
    w.add_argument("--faithful", action="store_true")
    ap.add_argument("--target", default="sw", help="target language(s), comma-separated (e.g. ko,ru)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--checks-only", action="store_true",
                    help="only the equivalence checks (wechsel, focus, their references and the dense oracles): no full "
                         "transfers, repeats or bits/byte")
    ap.add_argument("--train-steps", type=int, default=0, help="also run xlt adapt for N steps per init (0: skip)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="runs of each timed mapping step (wechsel, focus and their references), alternated; median reported")
    ap.add_argument("--work", help="keep prepared inputs in WORK/<language> and reuse them (default: a new temporary folder)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if args.cmd == "worker":
        return worker(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import importlib.util

    have_ref = {m: importlib.util.find_spec(p) is not None for m, p in (("wechsel", "wechsel"), ("focus", "deepfocus"))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for target in [t.strip() for t in args.target.split(",") if t.strip()]:
        results = run_target(args, target, have_ref)
        _print_table(results)
        path = out / f"vocab_transfer_{results['settings']['target']}.json"
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
        print(f"wrote {path}")


def _print_table(r: dict) -> None:
    def f(x, nd=2):
        return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    def g(x):
        return "—" if x is None else f"{x:.1e}"

    st = r["settings"]
    print(f"\n== {st['target']} (SmolLM2, {st['source_vocab']} tokens -> {st['target_vocab']} tokens, asked {st['vocab_size']})")
    if "bits_per_byte_step0" in r:
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
                  f"full speed-up x{f(ratio(fu.get('seconds'), r['methods'][m]['full'].get('seconds')), 1)}")
    print(f"\n{'equivalence (every row)':44} {'rows':>6} {'compared':>9} {'max|dW|':>8} {'max|dE|':>8}  excluded")
    for m, eq in r["equivalence"].items():
        if "error" in eq:
            print(f"{m:44} {eq['error']}")
        for key, v in eq.items():
            if not isinstance(v, dict) or "rows" not in v:
                continue
            excl = v.get("rows_excluded")
            excl = "; ".join(f"{n} {why}" for why, n in excl.items() if n) if excl else (
                f"{v['random_rows']} random (same rows)" if "random_rows" in v else "")
            bad = v.get("mismatched_rows", 0) + v.get("unexplained_rows", 0)
            print(f"{m + ' ' + key:44} {v['rows']:>6} {v['rows_compared']:>9} {g(v.get('max_abs_weight_diff')):>8} "
                  f"{g(v.get('max_abs_diff')):>8}  {excl}{f'  ({bad} MISMATCHED)' if bad else ''}")
    if "training" in r:
        print(f"\n{'init':10} {'bpb@0':>7} {'bpb end':>8} {'steps to random final':>22} {'ratio':>6}")
        for m, v in r["training"].items():
            print(f"{m:10} {f(v['bpb_step0'], 3):>7} {f(v['bpb_final'], 3):>8} {f(v.get('steps_to_random_final'), 1):>22} "
                  f"{'step 0' if v.get('reached_at_step0') else f(v.get('steps_saved_ratio'), 2):>6}")


if __name__ == "__main__":
    main()
