"""URIEL+ typological distances between languages, all pairs at once (urielplus 1.3.2, Khan et al. 2025).

:func:`distances` gives, per kind, the full ``len(langs) × len(langs)`` matrix of the distance
``urielplus.URIELPlus().new_distance(kind, a, b)`` returns in its default configuration, computed with a few
matrix products instead of urielplus' Python loops over pairs and features (urielplus is not imported: importing
it is slow and ``URIELPlus()`` writes files into its own package folder). The definition, as urielplus computes it:

- Data: the package's released feature arrays (``database/original_uriel/*.npz``; ``URIELPlus()`` copies them to
  ``database/`` and reads those copies). Each is ``data[language, feature, source]`` with −1 for "unknown".
  ``genetic``: ``family_features.npz`` (3,718 Glottolog family-membership features, 0/1, one source);
  ``geographic``: ``geocoord_features.npz`` (299 features in [0, 1], one source); ``script``:
  ``script_features.npz`` (42 script-type features, 0/1, one source); ``featural``: ``features.npz`` (289
  typological features from 10 sources: WALS, SSWL, Ethnologue, PHOIBLE ...), and its subsets ``syntactic``
  (names starting ``S_``, 103), ``phonological`` (``P_``, 28) and ``inventory`` (``INV_``, 158).
- A language *has* feature f when not all of its sources say −1. Its value is the single source's value, or for
  several sources their union (``aggregation='U'``): the maximum of the known values (not −1, finite).
- The distance of a and b uses only the features both have (urielplus' shared indices), as vectors u, v over them.
  A zero vector is replaced by a constant one (urielplus' ``1e-10`` fill), i.e. by the uniform direction.
  ``d = 2·arccos(clip(cos(u, v), −1, 1))/π`` (``distance_metric='angular'``), in [0, 1].
- No feature both have (one of them has none of this kind, or their features are disjoint): urielplus' matrix
  form returns −1, its pair form raises "No shared ... features". Here the value is NaN and
  ``Distances.reasons[(kind, a, b)]`` says why (e.g. "URIEL+ has no phonological data for arb").

Where this differs from urielplus' numbers, and why:

- urielplus rounds to 4 decimals; these values are not rounded (round them to compare: equal within one unit of
  the 4th decimal, tested on 6 languages × 7 kinds and benchmarked on the Bible's 23 languages).
- urielplus computes single-source kinds (genetic, geographic) in float32, so its diagonal is up to 3e-4 instead
  of 0 and its values are float32 numbers; here everything is float64, the diagonal is exactly 0.0 (also for a
  language without data of that kind, where urielplus' matrix gives 0 as well), and a cosine within 1e-12 of 1
  counts as 1, so identical vectors give exactly 0 rather than ~1e-8 of rounding noise (a true distance below 1e-6
  is reported as 0).
- ``morphological`` is not computable from the released data: ``features.npz`` has no ``M_`` feature (they come
  with Grambank, ``URIELPlus().integrate_grambank()``), so urielplus gives −1 for every pair. It is left out of
  :data:`ALL_KINDS` and asking for it raises :class:`~xlt.errors.XltError`.
- Quirks kept as urielplus has them: a language with no family feature set to 1 (e.g. nob, ekk, lvs) has the
  uniform genetic vector, so two such languages are at genetic distance 0 from each other.

Language codes: every code goes through :func:`xlt.languages.resolve` (ISO 639-1 or 639-3, ``sw`` → ``swh``,
macrolanguages → their usual individual language: ``swa``→``swh``, ``ara``→``arb``, ``fas``→``pes``,
``zho``→``cmn``, ...), and the resolved code is looked up in URIEL+ as it is. URIEL+ indexes the individual
languages and the macrolanguages separately (both ``swh`` and ``swa``, ``cmn`` and ``zho`` ...: all 15 pairs of
:data:`URIEL_MACRO` are present), with different data: e.g. ``cmn`` and ``pes`` have no script data while ``zho``
and ``fas`` have; ``arb`` has no phonological or inventory data while ``ara`` has. By default the individual
language's own row is used (so values equal urielplus' for that code); ``macro_fallback=True`` uses the
macrolanguage's row (:data:`URIEL_MACRO`) for a kind where the individual language has no data, and records it in
``Distances.substitutions[(kind, lang)]``. A code ``resolve`` does not know but URIEL+ has (retired ISO codes such
as ``ajp``) is used as it is. A language URIEL+ lacks raises :class:`~xlt.errors.XltError` naming it and suggesting
URIEL+ codes of languages with a similar name.

Cache: each kind's matrix over the sorted language set is kept in ``xlt.util.cache_dir() / "predict"`` as JSON,
keyed by (urielplus version, kind, sorted languages, macro_fallback); written through a temporary file and a
rename; a file that cannot be read or does not match its key is recomputed and replaced. Only the installed
package's data is cached (an explicit ``folder`` is never cached). In memory, the four arrays stay loaded after the
first call (~230 MB) for later calls.

:func:`typology_overlaps` gives the pair features of the Basque event-extraction study (Zubillaga et al. 2024):
same script, and the shares of word-order and morphological features on which two languages agree.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from xlt.errors import XltError

#: the kinds :func:`distances` computes by default (all that urielplus 1.3.2's released data supports)
ALL_KINDS = ("syntactic", "phonological", "inventory", "genetic", "geographic", "featural", "script")
#: kind -> (file of ``original_uriel``, feature-name prefix, or None for all of the file's features)
SOURCES = {
    "syntactic": ("features.npz", "S_"),
    "phonological": ("features.npz", "P_"),
    "inventory": ("features.npz", "INV_"),
    "featural": ("features.npz", None),
    "genetic": ("family_features.npz", None),
    "geographic": ("geocoord_features.npz", None),
    "script": ("script_features.npz", None),
}
#: individual language (as :func:`xlt.languages.resolve` gives it) -> its macrolanguage's URIEL+ code, used for a
#: kind the individual language has no data of when ``macro_fallback=True`` (Filipino ``fil`` is not Tagalog's
#: macrolanguage and has less data than ``tgl``: not listed)
URIEL_MACRO = {"swh": "swa", "arb": "ara", "pes": "fas", "cmn": "zho", "zsm": "msa", "ekk": "est", "lvs": "lav",
               "nob": "nor", "uzn": "uzb", "azj": "aze", "kmr": "kur", "khk": "mon", "gaz": "orm", "als": "sqi",
               "ydd": "yid"}
#: a cosine this close to 1 counts as 1 (identical vectors give exactly 0)
COS_SNAP = 1e-12
#: word-order features of URIEL+'s syntax (``S_``): the basic orders (S_SVO ... S_OSV, S_VOX ... S_OVX) and every
#: feature whose name places one element before/after/around another or at a position of the clause
WORD_ORDER = re.compile(r"^S_(([SVO]{3}|[VOX]{3})$|.*_(BEFORE|AFTER|AROUND)_|.*_(INITIAL|FINAL|SECOND)$)")
#: prefix of URIEL+'s morphological features (present only once Grambank is integrated; none in the released data)
MORPHOLOGY_PREFIX = "M_"
_CACHE_FORMAT = 1
#: close URIEL+ codes for well-known languages URIEL+ lacks
_CLOSE = {"cnr": ("hbs", "srp", "hrv", "bos")}
_GENERIC_WORDS = {"language", "languages", "sign", "northern", "southern", "eastern", "western", "central", "north",
                  "south", "east", "west", "upper", "lower", "middle", "old", "new", "standard", "classical",
                  "modern", "creole", "pidgin"}


# -- data ------------------------------------------------------------------------------------------------------------
def uriel_data_dir() -> Path:
    """The folder of urielplus' released arrays (``database/original_uriel``), found without importing urielplus."""
    from xlt.analyze import langfamilies

    csvs = langfamilies.urielplus_csv_dir()
    folder = csvs.parent / "original_uriel" if csvs is not None else None
    if folder is None or not all((folder / f).is_file() for f, _ in SOURCES.values()):
        raise XltError("URIEL+ typological distances need the urielplus package's data, which is not installed",
                       "install it: pip install --no-deps urielplus==1.3.2")
    return folder


def urielplus_version() -> str:
    """The installed urielplus version (read from its metadata; the package is not imported), or ``unknown``."""
    try:
        return importlib.metadata.version("urielplus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class _Table:
    feats: np.ndarray  # (F,) feature names
    index: dict[str, int]  # language code -> row
    data: np.ndarray  # (L, F, S) as stored (float32 or float64), −1 = unknown


@lru_cache(maxsize=4)
def _table(folder: str, file: str) -> _Table:
    path = Path(folder) / file
    try:
        with np.load(path, allow_pickle=False) as z:
            feats, langs, data = z["feats"].astype(str), z["langs"].astype(str), z["data"]
    except (OSError, ValueError, KeyError) as e:
        raise XltError(f"cannot read URIEL+'s {file} in the urielplus package ({type(e).__name__}: {e})",
                       "reinstall it: pip install --no-deps --force-reinstall urielplus==1.3.2") from None
    if data.ndim != 3 or data.shape[:2] != (len(langs), len(feats)):
        raise XltError(f"URIEL+'s {file} has an unexpected layout {data.shape}",
                       "reinstall it: pip install --no-deps --force-reinstall urielplus==1.3.2")
    return _Table(feats, {c: i for i, c in enumerate(langs)}, data)


def _columns(table: _Table, prefix: str | None) -> np.ndarray:
    return np.ones(len(table.feats), bool) if prefix is None else np.char.startswith(table.feats, prefix)


def _aggregate(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, has)`` of ``rows[..., source]``: has = not all sources −1; value = the one source's value, or the
    maximum of the known (not −1, finite) values of several (union), −1 when none is known."""
    rows = rows.astype(np.float64)
    has = (rows != -1.0).any(-1)
    if rows.shape[-1] == 1:
        return rows[..., 0], has
    known = (rows != -1.0) & np.isfinite(rows)
    vals = np.where(known, rows, -np.inf).max(-1)
    return np.where(known.any(-1), vals, -1.0), has


def uriel_languages(folder: str | Path | None = None) -> frozenset[str]:
    """The ISO 639-3 codes URIEL+ has rows for (the same 7,970 in every array of urielplus 1.3.2)."""
    return _languages(str(folder or uriel_data_dir()))


@lru_cache(maxsize=4)
def _languages(folder: str) -> frozenset[str]:
    return frozenset(_table(folder, "script_features.npz").index)


# -- language codes --------------------------------------------------------------------------------------------------
def _suggest(code: str, name: str | None, have: frozenset[str]) -> list[str]:
    """URIEL+ codes of languages whose ISO name shares a distinctive word with ``name``, else similar codes."""
    out = [c for c in _CLOSE.get(code, ()) if c in have]
    if name:
        from xlt.languages import _tables

        by3, _ = _tables()
        words = {w for w in re.findall(r"[a-z]+", name.lower()) if len(w) > 3 and w not in _GENERIC_WORDS}
        for c, (_, other, _) in sorted(by3.items()):
            if c in have and c != code and words & set(re.findall(r"[a-z]+", other.lower())):
                out.append(c)
    if not out:
        out = difflib.get_close_matches(code, sorted(have), n=4)
    return list(dict.fromkeys(out))[:6]


def uriel_code(code: str, folder: str | Path | None = None) -> str:
    """The URIEL+ code of ``code`` (resolved by :func:`xlt.languages.resolve`; see the module docstring), or one
    :class:`~xlt.errors.XltError` naming the language and URIEL+ codes close to it."""
    from xlt.languages import resolve

    have = uriel_languages(folder)
    try:
        lang = resolve(code)
    except XltError:
        raw = code.strip().lower() if isinstance(code, str) else ""
        if raw in have:  # a retired ISO code URIEL+ still has
            return raw
        raise
    if lang.code in have:
        return lang.code
    close = _suggest(lang.code, lang.name, have)
    raise XltError(f"URIEL+ has no data for {lang.code} ({lang.name})",
                   "leave it out, or use a close language URIEL+ has" + (f": {', '.join(close)}" if close else ""))


# -- the result ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Distances:
    """URIEL+ distances of every pair of ``langs`` for each of ``kinds`` (NaN where URIEL+ cannot compute one).
    Compare two by their matrices (``==`` is identity)."""

    langs: tuple[str, ...]
    kinds: tuple[str, ...]
    matrices: dict[str, np.ndarray] = field(repr=False)
    #: (kind, a, b) -> why that distance is NaN, for both orders of every NaN pair
    reasons: dict[tuple[str, str, str], str] = field(default_factory=dict, repr=False)
    urielplus_version: str = "unknown"
    macro_fallback: bool = False
    #: (kind, lang) -> the macrolanguage's URIEL+ row used for lang (``macro_fallback=True`` only)
    substitutions: dict[tuple[str, str], str] = field(default_factory=dict)

    def _pos(self, lang: str) -> int:
        try:
            return self.langs.index(lang)
        except ValueError:
            from xlt.languages import resolve

            code = resolve(lang).code
            if code in self.langs:
                return self.langs.index(code)
            raise XltError(f"{lang} is not one of these distances' languages", f"use one of {', '.join(self.langs)}")

    def matrix(self, kind: str) -> np.ndarray:
        """The ``len(langs) × len(langs)`` matrix of ``kind`` (a read-only array, rows and columns in ``langs``
        order)."""
        if kind not in self.matrices:
            raise XltError(f"no {kind} distances here", f"use one of {', '.join(self.kinds)}")
        return self.matrices[kind]

    def get(self, kind: str, a: str, b: str) -> float:
        """The ``kind`` distance of ``a`` and ``b`` (NaN when URIEL+ cannot compute it: see ``reasons``)."""
        return float(self.matrix(kind)[self._pos(a), self._pos(b)])

    def reason(self, kind: str, a: str, b: str) -> str | None:
        """Why ``get(kind, a, b)`` is NaN (None when it is a number)."""
        return self.reasons.get((kind, self.langs[self._pos(a)], self.langs[self._pos(b)]))

    def to_frame(self):
        """Long pandas DataFrame: one row per (kind, a, b), diagonal included, with columns kind, a, b, distance."""
        import pandas as pd

        n = len(self.langs)
        a = np.repeat(np.array(self.langs, dtype=object), n)
        b = np.tile(np.array(self.langs, dtype=object), n)
        parts = [pd.DataFrame({"kind": kind, "a": a, "b": b, "distance": self.matrices[kind].ravel()})
                 for kind in self.kinds]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["kind", "a", "b", "distance"])

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN as null); :meth:`from_dict` reads it back."""
        def rows(m: np.ndarray) -> list:
            return [[None if math.isnan(x) else x for x in r] for r in m.tolist()]

        return {"urielplus": self.urielplus_version, "macro_fallback": self.macro_fallback, "langs": list(self.langs),
                "kinds": list(self.kinds), "distances": {k: rows(self.matrices[k]) for k in self.kinds},
                "reasons": [{"kind": k, "a": a, "b": b, "reason": r} for (k, a, b), r in sorted(self.reasons.items())],
                "substitutions": [{"kind": k, "lang": l, "uriel_code": c}
                                  for (k, l), c in sorted(self.substitutions.items())]}

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> Distances:
        langs, kinds = tuple(d["langs"]), tuple(d["kinds"])
        mats = {}
        for k in kinds:
            m = np.array([[np.nan if x is None else float(x) for x in r] for r in d["distances"][k]], dtype=np.float64)
            if m.shape != (len(langs), len(langs)):
                raise ValueError(f"{k} matrix of shape {m.shape} for {len(langs)} languages")
            m.flags.writeable = False
            mats[k] = m
        reasons = {(r["kind"], r["a"], r["b"]): r["reason"] for r in d["reasons"]}
        subs = {(s["kind"], s["lang"]): s["uriel_code"] for s in d.get("substitutions", [])}
        return cls(langs, kinds, mats, reasons, d["urielplus"], bool(d.get("macro_fallback", False)), subs)

    @classmethod
    def from_json(cls, text: str) -> Distances:
        return cls.from_dict(json.loads(text))


# -- the computation -------------------------------------------------------------------------------------------------
def pairwise_angular(values: np.ndarray, has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(d, shared)``: the angular distance of every pair of rows of ``values`` (n × F) over the features both rows
    have (``has``, n × F), as urielplus computes it one pair at a time (module docstring), and the number of such
    features per pair. ``d`` is NaN where ``shared`` is 0, and exactly 0 on the diagonal."""
    x = np.where(has, values, 0.0).astype(np.float64)
    h = has.astype(np.float64)
    shared = h @ h.T                      # features both have
    dot = x @ x.T                         # Σ over shared features of x_a·x_b (x is 0 where a feature is missing)
    sq = (x * x) @ h.T                    # sq[a, b] = Σ over features shared with b of x_a²
    sm = x @ h.T                          # sm[a, b] = Σ over features shared with b of x_a
    sq_b, sm_b = sq.T, sm.T
    m = np.maximum(shared, 1.0)
    za, zb = sq == 0, sq_b == 0           # a zero vector becomes the uniform one (urielplus' 1e-10 fill)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(~za & ~zb, dot / np.sqrt(sq * sq_b),
                       np.where(za & zb, 1.0, np.where(za, sm_b / np.sqrt(m * sq_b), sm / np.sqrt(m * sq))))
    cos = np.clip(cos, -1.0, 1.0)
    cos[cos > 1.0 - COS_SNAP] = 1.0
    d = 2.0 * np.arccos(cos) / np.pi
    d[shared == 0] = np.nan
    np.fill_diagonal(d, 0.0)
    return d, shared.astype(np.int64)


def _kind_label(kind: str) -> str:
    return "typological (featural)" if kind == "featural" else kind


def _compute(kind: str, langs: list[str], folder: str, macro_fallback: bool
             ) -> tuple[np.ndarray, dict[tuple[str, str, str], str], dict[tuple[str, str], str]]:
    file, prefix = SOURCES[kind]
    table = _table(folder, file)
    cols = _columns(table, prefix)
    rows = [table.index[c] for c in langs]
    values, has = _aggregate(table.data[rows][:, cols, :])
    subs: dict[tuple[str, str], str] = {}
    empty = ~has.any(1)
    for i in np.flatnonzero(empty):
        macro = URIEL_MACRO.get(langs[i])
        if macro_fallback and macro in table.index:
            v, h = _aggregate(table.data[table.index[macro]][cols, :])
            if h.any():
                values[i], has[i], empty[i] = v, h, False
                subs[(kind, langs[i])] = macro
    d, shared = pairwise_angular(values, has)
    reasons: dict[tuple[str, str, str], str] = {}
    label = _kind_label(kind)

    def missing(lang: str) -> str:
        macro = URIEL_MACRO.get(lang)
        if not macro_fallback and macro in table.index:
            _, h = _aggregate(table.data[table.index[macro]][cols, :])
            if h.any():
                return f"{lang} (its macrolanguage {macro} has some: macro_fallback=True uses them)"
        return lang

    for a, b in zip(*np.nonzero(np.isnan(d))):
        if a > b:
            continue
        gone = [missing(langs[i]) for i in (a, b) if empty[i]]
        why = (f"URIEL+ has no {label} data for {' or '.join(gone)}" if gone else
               f"{langs[a]} and {langs[b]} have no {label} feature both known in URIEL+")
        reasons[(kind, langs[a], langs[b])] = reasons[(kind, langs[b], langs[a])] = why
    return d, reasons, subs


def _cache_file(version: str, kind: str, langs: list[str], macro_fallback: bool) -> Path:
    from xlt.util import cache_dir

    key = hashlib.sha256("\n".join([version, kind, str(macro_fallback), *langs]).encode()).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9.]+", "_", version)
    return cache_dir() / "predict" / f"urielplus-{safe}-{kind}{'-macro' if macro_fallback else ''}-{key}.json"


def _read_cache(path: Path, version: str, kind: str, langs: list[str], macro_fallback: bool) -> Distances | None:
    """The cached one-kind result, or None when the file is missing, unreadable or not for this key."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != _CACHE_FORMAT:
            return None
        got = Distances.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if (got.urielplus_version, got.kinds, list(got.langs), got.macro_fallback) != (version, (kind,), langs,
                                                                                     macro_fallback):
        return None
    return got


def _write_cache(path: Path, result: Distances) -> None:
    from xlt.util import write_json_atomic

    try:
        write_json_atomic(path, {"format": _CACHE_FORMAT, **result.to_dict()})
    except OSError:
        pass  # a cache that cannot be written only costs the recomputation next time


def _check_kinds(kinds: Iterable[str] | str) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(dict.fromkeys(kinds))
    for k in kinds:
        if k == "morphological":
            raise XltError("URIEL+'s released data (urielplus 1.3.2) has no morphological features: they come with "
                           "Grambank (URIELPlus().integrate_grambank()), so urielplus cannot compute this distance "
                           "either", f"use the other kinds: {', '.join(ALL_KINDS)}")
        if k not in SOURCES:
            close = difflib.get_close_matches(str(k), ALL_KINDS, n=1)
            raise XltError(f"unknown URIEL+ distance kind {k!r}" + (f" (did you mean {close[0]}?)" if close else ""),
                           f"choose among {', '.join(ALL_KINDS)}")
    if not kinds:
        raise XltError("no distance kind asked for", f"choose among {', '.join(ALL_KINDS)}")
    return kinds


def distances(langs: Sequence[str], kinds: Iterable[str] | str = ALL_KINDS, *, macro_fallback: bool = False,
              cache: bool = True, folder: str | Path | None = None) -> Distances:
    """URIEL+ distances of every pair of ``langs`` for each of ``kinds`` (module docstring). Codes are resolved
    (``sw`` → ``swh``) and duplicates after resolution dropped, first occurrence kept; ``langs`` of the result are
    the resolved codes. ``cache``: read and write the on-disk cache (only for the installed package's data, not
    for an explicit ``folder``)."""
    if isinstance(langs, str):
        langs = [langs]
    kinds = _check_kinds(kinds)
    data = str(folder) if folder is not None else str(uriel_data_dir())
    codes = list(dict.fromkeys(uriel_code(c, data) for c in langs))
    if not codes:
        raise XltError("no language given for URIEL+ distances", "pass at least one ISO 639 code, e.g. ['eng', 'deu']")
    order = sorted(codes)
    version = urielplus_version()
    use_cache = cache and folder is None
    mats, reasons, subs = {}, {}, {}
    for kind in kinds:
        path = _cache_file(version, kind, order, macro_fallback) if use_cache else None
        got = _read_cache(path, version, kind, order, macro_fallback) if path is not None else None
        if got is None:
            d, r, s = _compute(kind, order, data, macro_fallback)
            d.flags.writeable = False
            got = Distances(tuple(order), (kind,), {kind: d}, r, version, macro_fallback, s)
            if path is not None:
                _write_cache(path, got)
        mats[kind] = got.matrices[kind]
        reasons.update(got.reasons)
        subs.update(got.substitutions)
    perm = np.array([order.index(c) for c in codes])
    out = {}
    for kind, m in mats.items():
        p = np.ascontiguousarray(m[np.ix_(perm, perm)])
        p.flags.writeable = False
        out[kind] = p
    return Distances(tuple(codes), kinds, out, reasons, version, macro_fallback, subs)


# -- typology overlaps (Zubillaga et al. 2024) ------------------------------------------------------------------
def typology_overlaps(source: str, target: str, *, folder: str | Path | None = None) -> dict:
    """Pair features of the Basque event-extraction study (Zubillaga et al. 2024: a shared script and shared
    morphological features help token-level tasks, a shared word order helps argument extraction):

    - ``same_script``: 1 when :func:`xlt.eval.script.language_script` gives both languages the same script (its
      table of usual scripts; a language not in it counts as Latin), else 0. Not from URIEL+'s script features:
      those describe script *types* (``SC_ALPHABET``, ``SC_EUROPEAN``, ...) pooled over every script a language
      was ever written in, so Latin and Cyrillic look alike (eng and rus differ only in ``SC_DIACRITICS`` ...),
      swh's are those of the Arabic script, and cmn and pes have none.
    - ``word_order_overlap``: among URIEL+'s word-order syntax features (:data:`WORD_ORDER`, 55 of the 103 ``S_``
      features), those both languages have (values aggregated as for the distances: union of sources), the share
      on which their values are equal; ``word_order_features`` is how many that is.
    - ``morphology_overlap``: the same over URIEL+'s morphological features (``M_``) when the data has any;
      urielplus 1.3.2's released data has none, so it is NaN (with the reason).

    A language paired with itself has overlap 1 everywhere. A NaN comes with its reason in ``reasons``."""
    from xlt.eval.script import language_script

    data = str(folder) if folder is not None else str(uriel_data_dir())
    a, b = uriel_code(source, data), uriel_code(target, data)
    table = _table(data, "features.npz")
    out: dict = {"source": a, "target": b, "same_script": int(language_script(a) == language_script(b))}
    reasons: dict[str, str] = {}
    for name, cols, what in (
            ("word_order", np.array([bool(WORD_ORDER.search(f)) for f in table.feats]), "word-order"),
            ("morphology", np.char.startswith(table.feats, MORPHOLOGY_PREFIX), "morphological")):
        values, has = _aggregate(table.data[[table.index[a], table.index[b]]][:, cols, :])
        if a == b:  # by definition, also where URIEL+ has none of these features for the language
            out[f"{name}_features"], out[f"{name}_overlap"] = int(has[0].sum()), 1.0
            continue
        both = has[0] & has[1]
        n = int(both.sum())
        out[f"{name}_features"] = n
        if n:
            out[f"{name}_overlap"] = float((values[0][both] == values[1][both]).sum() / n)
            continue
        out[f"{name}_overlap"] = float("nan")
        if not cols.any():
            reasons[f"{name}_overlap"] = (f"URIEL+'s data has no {what} features (urielplus 1.3.2 gets them only from "
                                          "Grambank, URIELPlus().integrate_grambank())")
        else:
            gone = [c for c, h in zip((a, b), has) if not h.any()]
            reasons[f"{name}_overlap"] = (f"URIEL+ has no {what} features for {' or '.join(gone)}" if gone else
                                          f"{a} and {b} have no {what} feature both known in URIEL+")
    out["reasons"] = reasons
    return out
