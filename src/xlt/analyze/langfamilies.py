"""Language families: the Glottolog top-level family of a language, for language-family experts.

The table is Glottolog's lineage as bundled by the ``urielplus`` package (CC-BY-SA-4.0): ``uriel_glottocode_map.csv``
maps an ISO 639-3 code to a glottocode and ``lang_fam_geo.csv`` gives each glottocode's lineage, a comma-separated
path from the top-level family down (``"Indo-European, Classical Indo-European, Germanic, ..."``). The family of a
language is the first element of that path; a language with an empty lineage is an isolate (Basque) and is its own
family, named after the language, as Glottolog counts it.

The CSV files are read directly from the installed package's folder: ``urielplus`` is never imported, because its
``URIELPlus()`` writes into its own package directory. Install it with ``pip install --no-deps urielplus``, or give
the families yourself (:func:`read_family_map`).
"""

from __future__ import annotations

import csv
import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from xlt.errors import XltError
from xlt.languages import resolve

#: where a family came from, as recorded in an upcycling plan
GLOTTOLOG = "glottolog"
FAMILY_MAP = "family-map"


def urielplus_csv_dir() -> Path | None:
    """The folder of ``urielplus``' bundled CSV files, or None when the package is not installed (not imported)."""
    spec = importlib.util.find_spec("urielplus")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "database" / "urielplus_csvs"
        if (path / "lang_fam_geo.csv").is_file() and (path / "uriel_glottocode_map.csv").is_file():
            return path
    return None


@lru_cache(maxsize=4)
def glottolog_families(csv_dir: str | os.PathLike) -> dict[str, str]:
    """ISO 639-3 code -> Glottolog top-level family, from the two CSV files in ``csv_dir`` (urielplus' layout)."""
    csv_dir = Path(csv_dir)
    try:
        with open(csv_dir / "lang_fam_geo.csv", encoding="utf-8", newline="") as fh:
            lineage = {row["language_id"]: (row["language_name"], row["lineage"]) for row in csv.DictReader(fh)}
        with open(csv_dir / "uriel_glottocode_map.csv", encoding="utf-8", newline="") as fh:
            iso = {row["iso_code"].strip(): row["glottocode"].strip() for row in csv.DictReader(fh)}
    except (OSError, KeyError) as e:
        raise XltError(f"cannot read the Glottolog tables in {csv_dir} ({type(e).__name__}: {e})",
                       "reinstall urielplus (pip install --no-deps --force-reinstall urielplus), or give every "
                       "language's family with --family-map") from None
    out = {}
    for code, glottocode in iso.items():
        if glottocode in lineage:
            name, path = lineage[glottocode]
            top = path.split(",")[0].strip()
            out[code] = top or name.strip()  # an empty lineage: an isolate, its own family
    return out


def read_family_map(family_map: Mapping[str, str] | str | os.PathLike) -> dict[str, str]:
    """ISO 639-3 code -> family from a mapping or a file of ``lang=family`` lines (``#`` comments, blank lines
    skipped; codes in any form :func:`xlt.languages.resolve` takes)."""
    if isinstance(family_map, Mapping):
        pairs = [(str(k), str(v), f"family map entry {k!r}") for k, v in family_map.items()]
    else:
        path = Path(family_map).expanduser()
        if not path.is_file():
            raise XltError(f"family map file {path} does not exist",
                           "give a file of lang=family lines (e.g. 'sw=Atlantic-Congo'), one per line")
        pairs = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise XltError(f"line {n} of family map {path} is not lang=family: {line!r}",
                               "write one 'lang=family' pair per line, e.g. 'sw=Atlantic-Congo'")
            k, v = line.split("=", 1)
            pairs.append((k.strip(), v.strip(), f"line {n} of family map {path}"))
    out: dict[str, str] = {}
    for code, family, where in pairs:
        if not family:
            raise XltError(f"{where} gives no family for {code!r}", "write it as 'lang=family', e.g. 'sw=Atlantic-Congo'")
        out[resolve(code).code] = family
    return out


def language_families(langs, family_map: Mapping[str, str] | str | os.PathLike | None = None,
                      csv_dir: str | os.PathLike | None = None, with_source: bool = False):
    """The family of each language: ``{iso639_3: family}`` in the order of ``langs``.

    ``family_map`` (a mapping or a ``lang=family`` file) decides for the languages it names; the others get their
    Glottolog top-level family from urielplus' CSV files (``csv_dir``: that folder, default the installed
    package's). Languages found in neither are one :class:`XltError` naming them all. ``with_source=True`` also
    returns ``{iso639_3: "family-map" | "glottolog"}``.
    """
    codes = [resolve(c).code for c in ([langs] if isinstance(langs, str) else list(langs))]
    if not codes:
        raise XltError("no languages given", "pass the languages to build experts for, e.g. --langs en,fr,sw")
    given = read_family_map(family_map) if family_map is not None else {}
    families: dict[str, str] = {}
    source: dict[str, str] = {}
    rest = [c for c in dict.fromkeys(codes) if c not in given]
    table: dict[str, str] = {}
    folder = Path(csv_dir) if csv_dir is not None else urielplus_csv_dir()
    if rest and folder is not None:
        table = glottolog_families(str(folder))
    missing = [c for c in rest if c not in table]
    if missing:
        names = ", ".join(f"{c} ({resolve(c).name})" for c in missing)
        if folder is None:
            raise XltError(f"no language family known for {names}: the Glottolog tables (urielplus package) are not "
                           "installed and the family map does not name them",
                           "install them (pip install --no-deps urielplus), or give each family with --family-map "
                           "FILE of lang=family lines, e.g. " + ", ".join(f"'{c}=Atlantic-Congo'" for c in missing[:1]))
        raise XltError(f"no language family known for {names}: not in the Glottolog table (urielplus) "
                       + ("nor in the family map" if given else ""),
                       "give it with --family-map FILE of lang=family lines (e.g. "
                       + ", ".join(f"'{c}=FAMILY'" for c in missing) + ")")
    for c in dict.fromkeys(codes):
        if c in given:
            families[c], source[c] = given[c], FAMILY_MAP
        else:
            families[c], source[c] = table[c], GLOTTOLOG
    return (families, source) if with_source else families
