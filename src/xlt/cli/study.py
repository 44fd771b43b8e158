"""``xlt study NAME``: controlled transfer studies; each command's flags are its options dataclass's fields."""

from __future__ import annotations

from pathlib import Path

import typer

from xlt.cli.data import _make_command

study_app = typer.Typer(help="Controlled transfer studies on tiny models (metrics.json + report.html each).",
                        no_args_is_help=True)

_COMMON = [
    ("out", Path, typer.Option(..., "--out", "-o", help="Output folder: metrics.json, report.html.")),
    ("overwrite", bool, typer.Option(False, help="Replace --out if it exists.")),
    ("progress", bool, typer.Option(True, help="Show progress bars.")),
]


class _CloneStudy:
    description = ("Cloned languages (Schäfer et al. 2024): one corpus in k languages differing only in token ids; "
                   "tiny LMs per p_clone / schedule at one token budget; ppl per language, TEff from a monolingual "
                   "data law.")

    @property
    def options(self):
        from xlt.study.clone import CloneStudyOptions

        return CloneStudyOptions


def _run_clone(values: dict, out: Path, overwrite: bool, progress: bool) -> None:
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.study.clone import run_clone_study

    m = run_clone_study(out, show_progress=progress, overwrite=overwrite, **values)
    k = m["options"]["k"]
    t = Table(title=f"xlt study clone ({m['seconds']:.0f} s) -> {out}/report.html")
    for c in ["setting", "tokens"] + [f"ppl L{c}" for c in range(k)] + [f"TEff L{c}" for c in range(k)]:
        t.add_column(c, justify="left" if c == "setting" else "right")
    for s in m["settings"]:
        ppl = [f"{s['ppl'][str(c)]:.2f}" if str(c) in s["ppl"] else "–" for c in range(k)]
        teff = [f"{v:.3f}" if (v := (s.get("teff") or {}).get(str(c))) is not None else "–" for c in range(k)]
        t.add_row(s["name"], f"{s['tokens']:,}", *ppl, *teff)
    console.print(t)
    if m.get("symmetry"):
        sym = m["symmetry"]
        console.print(f"symmetry ({sym['setting']}): relative ppl difference {100 * sym['relative_difference']:.2f} % "
                      f"({'passed' if sym['passed'] else 'FAILED'}, tolerance {100 * sym['tolerance']:g} %)")


study_app.command("clone", help=_CloneStudy.description)(_make_command("clone", _CloneStudy(), _run_clone, _COMMON))


class _MatrixStudy:
    description = ("MonoByte-style transfer matrix: a tiny byte-level LM per language pretrained under identical "
                   "settings (plus a shuffled-bytes control), fine-tuned on every target; bits/byte, transfer score, "
                   "zero-shot; writes a transfer table for `xlt predict fit`.")

    @property
    def options(self):
        from xlt.study.matrix import MatrixStudyOptions

        return MatrixStudyOptions


def _run_matrix(values: dict, out: Path, overwrite: bool, progress: bool) -> None:
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.study.matrix import run_matrix_study

    m = run_matrix_study(out, show_progress=progress, overwrite=overwrite, **values)
    t = Table(title=f"transfer score (from-scratch − fine-tuned bits/byte), {m['seconds']['total']:.0f} s -> "
                    f"{out}/report.html")
    t.add_column("source \\ target")
    for c in m["targets"]:
        t.add_column(c, justify="right")
    for s, row in zip(m["sources"], m["transfer_score"]):
        t.add_row(s, *[f"{v:.3f}" for v in row])
    console.print(t)


study_app.command("matrix", help=_MatrixStudy.description)(_make_command("matrix", _MatrixStudy(), _run_matrix,
                                                                           _COMMON))
