"""Source code paired with its LLVM IR (IRCoder, Paul, Glavaš & Gurevych, ACL 2024; the SLTrans recipe).

IRCoder continues the pre-training of code LMs on *[source; IR]* pairs: each self-contained source file is compiled
by its language's LLVM frontend to textual IR twice, size-optimised (``-Oz``) and performance-optimised (``-O3``);
files that fail to compile are dropped, and the sources are deduplicated by MinHash. This builder does that for C
and C++ with clang:

- **Input** (``src``): a folder, searched recursively for ``.c`` (C) and ``.cc``/``.cpp``/``.cxx`` (C++) files,
  taken in sorted order of their relative paths (the record ``key``); or a JSONL file of
  ``{"id": ..., "code": ..., "lang": "c"|"cpp"}`` (``c++``/``cxx`` are read as ``cpp``), in file order.
  ``max_files`` keeps the first N. A file that is not UTF-8 is dropped (filter ``utf8``).
- **Dedup** (filter ``dedup``): MinHash over the source's shingles, as in IRCoder's ``Misc/minhash_dedupe.py``
  (from BigCode): the code is split on every character outside ``[A-Za-z0-9_]``, the non-empty tokens form 5-gram
  shingles (one shingle of all tokens when there are fewer than 5). A ``datasketch`` ``MinHash(num_perm=128,
  seed=1)`` per file is looked up in a ``MinHashLSH(threshold, 128)``; a file is a duplicate when a candidate
  already kept has estimated Jaccard >= ``dedup_threshold`` (default 0.85; at most 0.98, above which the LSH has
  fewer than two bands), so the first file of a near-duplicate cluster, in input order, is kept. (IRCoder's script
  used 256 permutations and 0.7.) The seed is fixed, not the run seed: the output does not depend on ``--seed``
  (it can on the ``datasketch`` major version, whose hashing scheme changed in 2.0). Dedup runs before compiling,
  so duplicates cost no compile.
- **Compile**: ``COMPILER -S -emit-llvm -O<level> -x c -std=gnu11 -o - FILE`` (C++: ``-x c++ -std=gnu++17``), one
  call per level of ``opt_levels`` (default ``Oz,O3``), without a shell, with ``cwd`` the source folder and the
  path relative to it (so no absolute path reaches the IR), a JSONL record's code on stdin. The language standard
  is fixed rather than left to clang's default so that one source gives the same IR on clang 11-19 wherever the
  language allows; the GNU dialects accept the extensions common in real code. Each call has ``timeout`` seconds;
  on expiry the compiler's whole process group is killed. A file is kept only when every level compiled
  (filters ``timeout``, then ``compile``: a non-zero exit or empty output); the manifest's ``stats`` count the
  failures by reason and give the first line of the compiler's message for the first few.
  Files are compiled by a small thread pool (the compiler runs in its own process, so threads suffice), results
  taken in input order: the output does not depend on the pool or the chunk size.
- **Strip** (``strip``, default on; :func:`strip_ir`): removes what names the machine, file or compiler rather than
  the program: the ``; ModuleID`` comment, ``source_filename``, ``target datalayout`` and ``target triple`` lines,
  every metadata definition line (named ``!llvm.module.flags``/``!llvm.ident``/... and numbered ``!N = ...``), and
  every metadata attachment on instructions, globals and function headers (``, !tbaa !5``, ``, !llvm.loop !9``,
  ``!dbg !10``). Kept: attribute groups (``attributes #N = {...}``) and their ``#N`` references, ``; Function
  Attrs:`` comments and block comments; §17's notes do not say IRCoder removed attributes, and they carry semantics
  (``nounwind``, ``readnone``) the optimiser used. If metadata is still referenced after the attachments are gone
  (``metadata !12`` operands of debug intrinsics, which only ``-g`` produces), all metadata lines are kept so the
  IR still assembles. Runs of blank lines left behind are collapsed to one. Stripped IR assembles with ``llvm-as``.

Records: ``key``, ``langs`` (``["c"]`` or ``["cpp"]``: programming languages, not ISO 639-3 codes),
``origin`` ``"real"``, ``source_lang`` (the same code), ``code`` (the source), ``ir`` (``{"Oz": ..., "O3": ...}``,
one entry per level in the order given). The compiler's ``--version`` line and flags go to the manifest's
``stats``, the SHA-256 of its executable to ``inputs``.

No compiler is an error before anything is written: install clang (``apt-get install clang`` on Debian/Ubuntu) or
give ``--compiler PATH``. The default is the first of ``clang``, ``clang-19`` ... ``clang-11`` on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.options import REQUIRED, option, positive

#: the compilers tried, in order, when none is given
DEFAULT_COMPILERS = ("clang", *(f"clang-{v}" for v in range(19, 10, -1)))
INSTALL_HINT = "install clang (Debian/Ubuntu: apt-get install clang), or give --compiler PATH to a clang"
#: source suffix -> language code
SUFFIXES = {".c": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp"}
LANG_ALIASES = {"c": "c", "cpp": "cpp", "c++": "cpp", "cxx": "cpp"}
#: language code -> (clang -x value, -std flag)
LANG_FLAGS = {"c": ("c", "-std=gnu11"), "cpp": ("c++", "-std=gnu++17")}
OPT_LEVELS = ("O0", "O1", "O2", "O3", "Os", "Oz", "Og")
MINHASH_PERM = 128
MINHASH_SEED = 1
SHINGLE = 5
MAX_FAILURE_EXAMPLES = 20


def _lsh_threshold(v: float) -> str | None:
    # datasketch's MinHashLSH needs at least 2 bands of 128 hashes, which thresholds above 0.98 do not give
    return None if 0 < v <= 0.98 else f"must be in (0, 0.98], got {v}"


def _opt_levels(v: str) -> str | None:
    try:
        parse_opt_levels(v)
    except XltError as e:
        return e.problem
    return None


@dataclass
class IROptions:
    src: str = option(REQUIRED, "a folder of C/C++ files (searched recursively) or a JSONL of {id, code, lang}")
    compiler: str | None = option(None, "clang to run (name on PATH or path); default: clang, clang-19..clang-11")
    opt_levels: str = option("Oz,O3", "optimisation levels, comma-separated; one IR per level", check=_opt_levels)
    timeout: float = option(30.0, "seconds per compiler call before it is killed and the file dropped", check=positive)
    dedup: bool = option(True, "drop near-duplicate sources (MinHash LSH over code shingles, first one kept)")
    dedup_threshold: float = option(0.85, "estimated Jaccard similarity at which a source is a duplicate (<= 0.98)",
                                    check=_lsh_threshold)
    strip: bool = option(True, "remove ModuleID, source_filename, target lines and all metadata from the IR")
    max_files: int | None = option(None, "compile at most this many input files (the first in order)", check=positive)
    workers: int = option(4, "compiler processes run at once", check=positive)


# -- the compiler -------------------------------------------------------------------------------------------
def find_compiler(given: str | None = None) -> str:
    """The compiler's executable: ``given`` (a name on PATH or a path), else the first of
    :data:`DEFAULT_COMPILERS` on PATH. No compiler: one :class:`XltError` saying how to install one."""
    if given:
        found = shutil.which(given)
        if found is None:
            raise XltError(f"compiler {given!r} is not an executable file or a command on PATH", INSTALL_HINT)
        return found
    for name in DEFAULT_COMPILERS:
        found = shutil.which(name)
        if found:
            return found
    raise XltError("no C compiler found: none of clang, clang-19 ... clang-11 is on PATH", INSTALL_HINT)


def compiler_version(compiler: str, timeout: float = 30.0) -> str:
    """The first line of ``compiler --version`` (``Debian clang version 14.0.6``)."""
    try:
        p = subprocess.run([compiler, "--version"], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise XltError(f"could not run {Path(compiler).name} --version: {e}", INSTALL_HINT) from None
    lines = [l.strip() for l in p.stdout.decode("utf-8", "replace").splitlines() if l.strip()]
    if p.returncode != 0 or not lines:
        raise XltError(f"{Path(compiler).name} --version failed (exit {p.returncode})", INSTALL_HINT)
    return lines[0]


def parse_opt_levels(text: str) -> list[str]:
    """``"Oz,O3"`` (or ``"-Oz, -O3"``) -> ``["Oz", "O3"]``; unknown or repeated levels refused."""
    levels = [t.strip().lstrip("-") for t in text.split(",") if t.strip()]
    bad = [l for l in levels if l not in OPT_LEVELS]
    if not levels or bad:
        raise XltError(f"optimisation levels {text!r} are not valid",
                       f"give some of {', '.join(OPT_LEVELS)}, e.g. Oz,O3")
    if len(set(levels)) != len(levels):
        raise XltError(f"optimisation levels {text!r} repeat a level", "give each level once, e.g. Oz,O3")
    return levels


@dataclass
class Compiled:
    """One compiler call's outcome: ``ir`` on success, else ``failure`` ("timeout" | "error" | "empty")."""

    ir: str | None
    failure: str | None = None
    message: str = ""


def compile_command(compiler: str, lang: str, level: str, path: str | None) -> list[str]:
    """The argument list of one call (``path`` None: the source comes on stdin)."""
    x, std = LANG_FLAGS[lang]
    return [compiler, "-S", "-emit-llvm", f"-{level}", "-x", x, std, "-o", "-", path or "-"]


def compile_to_ir(compiler: str, lang: str, level: str, *, code: str | None = None, path: str | None = None,
                  cwd: str | os.PathLike | None = None, timeout: float = 30.0) -> Compiled:
    """``code`` (on stdin) or the file ``path`` (relative to ``cwd``) compiled to textual IR at ``-<level>``.
    On timeout the compiler's process group is killed (a driver's children too)."""
    proc = subprocess.Popen(compile_command(compiler, lang, level, path), cwd=cwd, start_new_session=True,
                            stdin=subprocess.PIPE if path is None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    data = code.encode("utf-8") if path is None else None
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return Compiled(None, "timeout", f"no output after {timeout:g} s")
    message = next((l.strip() for l in err.decode("utf-8", "replace").splitlines() if l.strip()), "")
    if proc.returncode != 0:
        return Compiled(None, "error", message or f"exit status {proc.returncode}")
    ir = out.decode("utf-8", "replace")
    if not ir.strip():
        return Compiled(None, "empty", message or "no IR written")
    return Compiled(ir)


# -- stripping ----------------------------------------------------------------------------------------------
_HEADER = re.compile(r"^(; ModuleID = |source_filename = |target datalayout = |target triple = )")
_METADATA_LINE = re.compile(r"^!(\d+|[A-Za-z$._-][\w$.-]*)\s*=")
_ATTACHMENT = re.compile(r"(,\s*|\s+)![A-Za-z$._-][\w$.-]*\s+!(\d+|\{[^{}\"]*\})")
_NODE_REF = re.compile(r"!\d+")
_BLANKS = re.compile(r"\n{3,}")


def _outside_strings(line: str, fn) -> str:
    """``fn`` applied to the parts of ``line`` outside double-quoted strings (LLVM escapes a quote inside one as
    ``\\22``, so quotes alternate)."""
    parts = line.split('"')
    parts[::2] = [fn(p) for p in parts[::2]]
    return '"'.join(parts)


def _references_node(line: str) -> bool:
    return any(_NODE_REF.search(p) for p in line.split('"')[::2])


def strip_ir(ir: str) -> str:
    """``ir`` without the module header and metadata (see the module docstring for exactly what goes)."""
    code: list[str] = []
    meta: list[tuple[int, str]] = []  # metadata lines and where they were
    for line in ir.splitlines():
        if _HEADER.match(line):
            continue
        if _METADATA_LINE.match(line):
            meta.append((len(code), line))
            code.append("")  # placeholder, dropped below unless metadata is kept
            continue
        code.append(_outside_strings(line, lambda s: _ATTACHMENT.sub("", s)) if "!" in line else line)
    if meta and any(_references_node(l) for l in code if "!" in l):
        for i, line in meta:  # metadata still referenced (debug-intrinsic operands): keep it all
            code[i] = line
    text = "\n".join(code).strip("\n")
    return _BLANKS.sub("\n\n", text) + "\n"


# -- dedup --------------------------------------------------------------------------------------------------
_NON_WORD = re.compile(r"[^A-Za-z0-9_]+")


def shingles(code: str, n: int = SHINGLE) -> list[bytes]:
    """The distinct token ``n``-grams of ``code`` (tokens: runs of ``[A-Za-z0-9_]``), in first-seen order; one
    shingle of all tokens when there are fewer than ``n``."""
    toks = [t for t in _NON_WORD.split(code) if t]
    grams = [" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1)] if len(toks) >= n else [" ".join(toks)]
    return [g.encode("utf-8") for g in dict.fromkeys(grams)]


class NearDuplicates:
    """Streaming MinHash-LSH near-duplicate filter: :meth:`add` returns False for a text whose estimated Jaccard
    similarity to one already added is at least ``threshold``, else remembers it and returns True."""

    def __init__(self, threshold: float = 0.85, num_perm: int = MINHASH_PERM, seed: int = MINHASH_SEED):
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            raise XltError("MinHash dedup needs the 'datasketch' package",
                           "pip install datasketch, or pass --no-dedup") from None
        self._minhash = lambda: MinHash(num_perm=num_perm, seed=seed)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.threshold = threshold
        self.kept: list[np.ndarray] = []

    def signature(self, text: str):
        m = self._minhash()
        m.update_batch(shingles(text))
        return m

    def add(self, text: str) -> bool:
        m = self.signature(text)
        for i in self.lsh.query(m):
            if np.mean(self.kept[i] == m.hashvalues) >= self.threshold:
                return False
        self.lsh.insert(len(self.kept), m)
        self.kept.append(m.hashvalues)
        return True


# -- inputs -------------------------------------------------------------------------------------------------
@dataclass
class Source:
    key: str
    lang: str
    code: str | None  # None: not UTF-8
    path: str | None = None  # relative to cwd; None: compile ``code`` from stdin
    cwd: str | None = None


def _read_folder(root: Path, limit: int | None) -> Iterator[Source]:
    files = sorted((p.relative_to(root).as_posix() for p in root.rglob("*")
                    if p.suffix.lower() in SUFFIXES and p.is_file()))
    if not files:
        raise XltError(f"no C/C++ source files ({', '.join(SUFFIXES)}) under {root}",
                       "give --src a folder of .c/.cc/.cpp files, or a JSONL of {id, code, lang}")
    for rel in files[:limit]:
        try:
            code = (root / rel).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            code = None
        yield Source(rel, SUFFIXES[Path(rel).suffix.lower()], code, rel, str(root))


def _read_jsonl(path: Path, limit: int | None) -> Iterator[Source]:
    n = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                return
            where = f"{path.name} line {lineno}"
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise XltError(f"{where} is not JSON ({e})", 'write one {"id", "code", "lang"} object a line') from None
            if not isinstance(rec, dict) or not isinstance(rec.get("code"), str) or rec.get("id") in (None, ""):
                raise XltError(f"{where} lacks a string 'code' or an 'id'", 'write {"id", "code", "lang"} objects')
            lang = LANG_ALIASES.get(str(rec.get("lang", "")).lower())
            if lang is None:
                raise XltError(f"{where} ({rec['id']}) has lang {rec.get('lang')!r}; only C and C++ are compiled",
                               'give "lang": "c" or "cpp"')
            n += 1
            yield Source(str(rec["id"]), lang, rec["code"], None, str(path.parent))


def read_sources(src: str | os.PathLike, limit: int | None = None) -> Iterator[Source]:
    """The sources of ``src`` (folder or JSONL, see the module docstring), at most ``limit``."""
    p = Path(src).expanduser()
    if p.is_dir():
        return _read_folder(p, limit)
    if p.is_file():
        return _read_jsonl(p, limit)
    raise XltError(f"source {src} does not exist", "give --src a folder of C/C++ files or a JSONL of {id, code, lang}")


# -- the builder --------------------------------------------------------------------------------------------
@register_builder("ir")
class IRBuilder:
    description = "source files paired with clang LLVM IR at -Oz and -O3, MinHash-deduplicated (IRCoder)"
    options = IROptions
    seeded = False  # no randomness: MinHash has a fixed seed

    def records(self, ctx, o: IROptions) -> Iterator[dict]:
        levels = parse_opt_levels(o.opt_levels)
        compiler = find_compiler(o.compiler)
        version = compiler_version(compiler, o.timeout)
        sources = read_sources(o.src, o.max_files)
        dedup = NearDuplicates(o.dedup_threshold) if o.dedup else None
        ctx.add_input("src", o.src)
        ctx.add_input("compiler", compiler)
        failures = {"timeout": 0, "error": 0, "empty": 0}
        examples: dict[str, str] = {}
        ctx.extra.update(compiler=version, levels=levels,
                         compiler_flags={l: compile_command("", l, "O<level>", "FILE")[1:] for l in LANG_FLAGS},
                         compile_failures=failures, failure_examples=examples)

        def compile_all(s: Source) -> dict[str, Compiled]:
            out = {}
            for level in levels:
                out[level] = c = compile_to_ir(compiler, s.lang, level, code=s.code, path=s.path, cwd=s.cwd,
                                               timeout=o.timeout)
                if c.ir is None:
                    break
            return out

        with ThreadPoolExecutor(max_workers=o.workers) as pool:
            for chunk in ctx.chunks(sources):
                todo = [s for s in chunk if ctx.keep("utf8", s.code is not None)
                        and (dedup is None or ctx.keep("dedup", dedup.add(s.code)))]
                for s, res in zip(todo, pool.map(compile_all, todo)):
                    failed = next((c for c in res.values() if c.ir is None), None)
                    if failed is not None:
                        failures[failed.failure] += 1
                        if len(examples) < MAX_FAILURE_EXAMPLES:
                            examples[s.key] = failed.message
                    if not ctx.keep("timeout", failed is None or failed.failure != "timeout"):
                        continue
                    if not ctx.keep("compile", failed is None):
                        continue
                    ir = {l: strip_ir(c.ir) if o.strip else c.ir for l, c in res.items()}
                    yield {"key": s.key, "langs": [s.lang], "origin": "real", "source_lang": s.lang,
                           "code": s.code, "ir": ir}

    def example(self, workdir: Path) -> dict:
        """Three tiny C files and a fake compiler (a shell script printing fixed IR that names the file's
        function), so the example needs no clang."""
        src = Path(workdir) / "ir_src"
        src.mkdir(parents=True, exist_ok=True)
        bodies = {"add": "int add(int a, int b) { return a + b; }\n",
                  "square": "long square(long x) { return x * x; }\n",
                  "neg": "int neg(int x) { return -x; }\n"}
        for name, body in bodies.items():
            (src / f"{name}.c").write_text(body)
        fake = Path(workdir) / "fake-clang"
        fake.write_text(FAKE_COMPILER)
        fake.chmod(0o755)
        return {"src": str(src), "compiler": str(fake), "timeout": 10.0}


#: a stand-in for clang in the example: ``--version``, and for a compile, IR with one function named after the
#: input file, its optimisation level in a comment
FAKE_COMPILER = r"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "fake clang version 0.0 (xlt example)"; exit 0; fi
level=O0; file=-
for a in "$@"; do
  case "$a" in -O*) level=${a#-} ;; -*) ;; *) file=$a ;; esac
done
name=$(basename "$file" | sed 's/\..*//')
cat <<EOF
; ModuleID = '$file'
source_filename = "$file"

; level $level
define i32 @$name(i32 %0) {
  ret i32 %0, !dbg !1
}

!1 = !{}
EOF
"""
