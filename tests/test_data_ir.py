"""The IRCoder builder (`xlt data ir`): IR stripping, MinHash dedup, the compile pipeline with a fake compiler
(always), and real clang IR that re-assembles with llvm-as (when clang is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from xlt.data.builders.ir import NearDuplicates, compiler_version, find_compiler, shingles, strip_ir
from xlt.data.engine import read_records, run_builder
from xlt.errors import XltError

# clang 14's -O3 output for `int sq(int)` and a summing loop, cut down (header, attachments, metadata kept)
CLANG_IR = """; ModuleID = 'a.c'
source_filename = "a.c"
target datalayout = "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-f80:128-n8:16:32:64-S128"
target triple = "x86_64-pc-linux-gnu"

@.str = private unnamed_addr constant [12 x i8] c"hi !tbaa !5\\00", align 1

; Function Attrs: nounwind readnone uwtable
define dso_local i32 @sq(i32 noundef %0) local_unnamed_addr #0 !my.tag !9 {
  %2 = mul nsw i32 %0, %0
  ret i32 %2
}

define dso_local i32 @load(i32* nocapture noundef readonly %0, i1 %1) local_unnamed_addr #0 {
  %3 = load i32, i32* %0, align 4, !tbaa !5
  br i1 %1, label %4, label %4, !llvm.loop !9

4:                                                ; preds = %2, %2
  ret i32 %3
}

attributes #0 = { nounwind readnone uwtable "target-cpu"="x86-64" }

!llvm.module.flags = !{!0}
!llvm.ident = !{!4}

!0 = !{i32 1, !"wchar_size", i32 4}
!4 = !{!"Debian clang version 14.0.6"}
!5 = !{!6, !6, i64 0}
!6 = !{!"int", !7, i64 0}
!7 = !{!"Simple C/C++ TBAA"}
!9 = distinct !{!9}
"""

STRIPPED = """@.str = private unnamed_addr constant [12 x i8] c"hi !tbaa !5\\00", align 1

; Function Attrs: nounwind readnone uwtable
define dso_local i32 @sq(i32 noundef %0) local_unnamed_addr #0 {
  %2 = mul nsw i32 %0, %0
  ret i32 %2
}

define dso_local i32 @load(i32* nocapture noundef readonly %0, i1 %1) local_unnamed_addr #0 {
  %3 = load i32, i32* %0, align 4
  br i1 %1, label %4, label %4

4:                                                ; preds = %2, %2
  ret i32 %3
}

attributes #0 = { nounwind readnone uwtable "target-cpu"="x86-64" }
"""

# a stand-in compiler: fails on BROKEN, hangs (in a child process) on SLOW, else prints IR naming level and -x
FAKE = r"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "fake clang 1.0"; echo "second line"; exit 0; fi
level=O0; file=-; lang=?; prev=
for a in "$@"; do
  if [ "$prev" = "-x" ]; then lang=$a; fi
  case "$a" in -O*) level=${a#-} ;; -*) ;; *) [ "$prev" = "-x" ] || [ "$prev" = "-o" ] || file=$a ;; esac
  prev=$a
done
if [ "$file" = "-" ]; then src=$(cat); else src=$(cat "$file"); fi
case "$src" in
  *BROKEN*) echo "$file:1:1: error: broken on purpose" >&2; exit 1 ;;
  *SLOW*) sleep 30 & echo $! > "$(dirname "$0")/sleeper.pid"; wait; exit 0 ;;
esac
cat <<EOF
; ModuleID = '$file'
source_filename = "$file"
target triple = "x86_64-pc-linux-gnu"

; level=$level lang=$lang
define i32 @f(i32 %0) {
  ret i32 %0, !dbg !1
}

!llvm.ident = !{!1}
!1 = !{!"fake"}
EOF
"""


def fake_compiler(tmp_path: Path) -> str:
    p = tmp_path / "fakecc"
    p.write_text(FAKE)
    p.chmod(0o755)
    return str(p)


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def llvm_as_for(version_line: str | None = None) -> str | None:
    """llvm-as of the compiler's major version if installed, else any llvm-as."""
    m = re.search(r"version (\d+)", version_line or "")
    for name in ([f"llvm-as-{m.group(1)}"] if m else []) + ["llvm-as"]:
        if shutil.which(name):
            return shutil.which(name)
    return None


def assembles(ir: str, llvm_as: str) -> subprocess.CompletedProcess:
    return subprocess.run([llvm_as, "-", "-o", os.devnull], input=ir, capture_output=True, text=True, timeout=60)


# -- no compiler needed -------------------------------------------------------------------------------------
def test_strip_removes_header_and_metadata_exactly():
    assert strip_ir(CLANG_IR) == STRIPPED
    assert strip_ir(STRIPPED) == STRIPPED  # idempotent
    llvm_as = llvm_as_for()
    if llvm_as:
        assert assembles(CLANG_IR, llvm_as).returncode == 0
        r = assembles(STRIPPED, llvm_as)
        assert r.returncode == 0, r.stderr


def test_strip_keeps_metadata_still_referenced():
    ir = ("define void @f(i32 %x) !dbg !3 {\n  call void @llvm.dbg.value(metadata i32 %x, metadata !5, metadata "
          "!DIExpression()), !dbg !6\n  ret void\n}\n\n!llvm.ident = !{!0}\n!0 = !{!\"x\"}\n!5 = !{}\n")
    out = strip_ir(ir)
    assert "!dbg" not in out and "metadata !5" in out
    assert "!5 = !{}" in out and "!llvm.ident = !{!0}" in out  # all metadata kept: !5 is an operand


def test_shingles_and_near_duplicates():
    assert shingles("int a = b+c;", 2) == [b"int a", b"a b", b"b c"]
    assert shingles("x = y;") == [b"x y"]  # fewer tokens than 5: one shingle
    base = " ".join(f"int v{i} = f(v{i - 1}, {i});" for i in range(1, 60))
    near = base.replace("f(v58, 59)", "g(v58, 59)")  # one token of ~240 changed
    far = base[: len(base) // 2] + " ".join(f"double w{i} = h({i});" for i in range(40))
    other = "static char *name(void) { return \"something else entirely\"; }"
    exact = len(set(shingles(base)) & set(shingles(near))) / len(set(shingles(base)) | set(shingles(near)))
    d = NearDuplicates(0.85)
    assert abs(float((d.signature(base).hashvalues == d.signature(near).hashvalues).mean()) - exact) < 0.1
    assert [d.add(t) for t in (base, near, base, far, other, other + " ")] == [True, False, False, True, True, False]
    d2 = NearDuplicates(0.85)
    assert [d2.add(t) for t in (near, base)] == [True, False]  # first of a cluster wins, either order


def test_no_compiler_is_one_clear_error(tmp_path, monkeypatch):
    src = write(tmp_path / "src", {"a.c": "int f(void) { return 1; }\n"})
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(XltError) as e:
        run_builder("ir", tmp_path / "o.jsonl", src=str(src))
    assert "no C compiler" in str(e.value) and "apt-get install clang" in str(e.value) and "--compiler" in str(e.value)
    with pytest.raises(XltError, match="not an executable"):
        run_builder("ir", tmp_path / "o.jsonl", src=str(src), compiler=str(tmp_path / "nocc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_bad_options_and_inputs(tmp_path):
    cc = fake_compiler(tmp_path)
    src = write(tmp_path / "src", {"a.c": "int f(void) { return 1; }\n"})
    with pytest.raises(XltError, match="optimisation levels"):
        run_builder("ir", tmp_path / "o.jsonl", src=str(src), compiler=cc, opt_levels="Oz,O4")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "r1", "code": "fn main() {}", "lang": "rust"}) + "\n")
    with pytest.raises(XltError, match="r1.*only C and C"):
        run_builder("ir", tmp_path / "o.jsonl", src=str(tmp_path / "bad.jsonl"), compiler=cc)
    write(tmp_path / "empty", {"README": "no code"})
    with pytest.raises(XltError, match="no C/C\\+\\+ source files"):
        run_builder("ir", tmp_path / "o.jsonl", src=str(tmp_path / "empty"), compiler=cc)
    assert not (tmp_path / "o.jsonl").exists()


def test_pipeline_with_fake_compiler(tmp_path):
    cc = fake_compiler(tmp_path)
    src = write(tmp_path / "src", {"b.c": "int b(void) { return 2; }\n", "a.c": "int a(void) { return 1; }\n",
                                   "sub/m.cpp": "int m() { return 3; }\n", "broken.c": "BROKEN {\n",
                                   "notes.txt": "ignored"})
    (src / "latin1.c").write_bytes(b"/* caf\xe9 */ int x;\n")
    man = run_builder("ir", tmp_path / "o.jsonl", src=str(src), compiler=cc, chunk_size=2)
    recs = read_records(tmp_path / "o.jsonl")
    assert [r["key"] for r in recs] == ["a.c", "b.c", "sub/m.cpp"]
    assert [r["langs"] for r in recs] == [["c"], ["c"], ["cpp"]] and recs[2]["source_lang"] == "cpp"
    assert list(recs[0]) == ["builder", "key", "langs", "origin", "source_lang", "code", "ir"]
    assert recs[0]["code"] == "int a(void) { return 1; }\n" and recs[0]["origin"] == "real"
    assert list(recs[0]["ir"]) == ["Oz", "O3"]
    assert recs[0]["ir"]["O3"] == "; level=O3 lang=c\ndefine i32 @f(i32 %0) {\n  ret i32 %0\n}\n"
    assert recs[2]["ir"]["Oz"].startswith("; level=Oz lang=c++\n")
    assert man["filters"]["compile"] == {"kept": 3, "dropped": 1}
    assert man["filters"]["utf8"] == {"kept": 4, "dropped": 1}
    assert man["stats"]["compile_failures"] == {"timeout": 0, "error": 1, "empty": 0}
    assert man["stats"]["failure_examples"] == {"broken.c": "broken.c:1:1: error: broken on purpose"}
    assert man["stats"]["compiler"] == "fake clang 1.0" and len(man["inputs"]["compiler"]) == 64
    llvm_as = llvm_as_for()
    if llvm_as:
        for r in recs:
            for ir in r["ir"].values():
                assert assembles(ir, llvm_as).returncode == 0

    run_builder("ir", tmp_path / "raw.jsonl", src=str(src), compiler=cc, strip=False, opt_levels="-O1", max_files=1)
    raw = read_records(tmp_path / "raw.jsonl")
    assert [r["key"] for r in raw] == ["a.c"] and list(raw[0]["ir"]) == ["O1"]
    assert raw[0]["ir"]["O1"].startswith("; ModuleID = 'a.c'\n") and "!llvm.ident" in raw[0]["ir"]["O1"]


def test_jsonl_input_goes_through_stdin(tmp_path):
    cc = fake_compiler(tmp_path)
    rows = [{"id": "x1", "code": "int x(void) { return 1; }", "lang": "C"},
            {"id": "x2", "code": "int y() { return 2; }", "lang": "c++"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_builder("ir", tmp_path / "o.jsonl", src=str(tmp_path / "in.jsonl"), compiler=cc, strip=False)
    recs = read_records(tmp_path / "o.jsonl")
    assert [(r["key"], r["langs"]) for r in recs] == [("x1", ["c"]), ("x2", ["cpp"])]
    assert "; ModuleID = '-'" in recs[0]["ir"]["Oz"] and "lang=c++" in recs[1]["ir"]["O3"]


def test_dedup_on_and_off(tmp_path):
    cc = fake_compiler(tmp_path)
    body = "".join(f"int f{i}(int x) {{ return x * {i} + {i * 7}; }}\n" for i in range(40))
    src = write(tmp_path / "src", {"one.c": body, "two.c": body.replace("return x * 39", "return x * 38"),
                                   "three.c": "double g(double y) { return y / 2; }\n"})
    man = run_builder("ir", tmp_path / "on.jsonl", src=str(src), compiler=cc)
    assert [r["key"] for r in read_records(tmp_path / "on.jsonl")] == ["one.c", "three.c"]
    assert man["filters"]["dedup"] == {"kept": 2, "dropped": 1}
    man = run_builder("ir", tmp_path / "off.jsonl", src=str(src), compiler=cc, dedup=False)
    assert [r["key"] for r in read_records(tmp_path / "off.jsonl")] == ["one.c", "three.c", "two.c"]
    assert "dedup" not in man["filters"]
    with pytest.raises(XltError, match="dedup_threshold must be in"):
        run_builder("ir", tmp_path / "strict.jsonl", src=str(src), compiler=cc, dedup_threshold=0.99)


def test_timeout_kills_the_compiler_and_is_counted(tmp_path):
    cc = fake_compiler(tmp_path)
    src = write(tmp_path / "src", {"a.c": "int a;\n", "slow.c": "SLOW\n", "z.c": "int z;\n"})
    t0 = time.monotonic()
    man = run_builder("ir", tmp_path / "o.jsonl", src=str(src), compiler=cc, timeout=1.0, workers=2)
    assert time.monotonic() - t0 < 15
    assert [r["key"] for r in read_records(tmp_path / "o.jsonl")] == ["a.c", "z.c"]
    assert man["filters"]["timeout"] == {"kept": 2, "dropped": 1} and man["filters"]["compile"]["dropped"] == 0
    assert man["stats"]["compile_failures"]["timeout"] == 1
    pid = int((tmp_path / "sleeper.pid").read_text())  # the compiler's child died with it (process group kill)
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the compiler's child {pid} outlived the timeout")


def test_compiler_version_first_line(tmp_path):
    assert compiler_version(fake_compiler(tmp_path)) == "fake clang 1.0"


# -- real clang ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clang():
    try:
        cc = find_compiler()
    except XltError:
        pytest.skip("no clang on PATH: install it with `apt-get install clang` (Debian/Ubuntu; `make test` "
                    "installs it when run as root)")
    version = compiler_version(cc)
    llvm_as = llvm_as_for(version)
    if llvm_as is None:
        pytest.skip(f"{version} found but no llvm-as: apt-get install llvm")
    return cc, llvm_as


C_FILES = {
    "sq.c": "int sq(int x) { return x * x; }\n",
    "sum.c": "int sum(const int *a, int n) {\n  int s = 0;\n  for (int i = 0; i < n; i++) s += a[i];\n  return s;\n}\n",
    "str.c": "#include <string.h>\nunsigned long len(const char *s) { return strlen(s) + sizeof(\"hi !tbaa !5\"); }\n",
    "mx.cpp": "template <class T> T mx(T a, T b) { return a > b ? a : b; }\nint f(int a, int b) { return mx(a, b); }\n",
    "broken.c": "int f(int x) { return x + ; }\n",
}


def test_clang_ir_assembles_and_broken_files_are_dropped(clang, tmp_path):
    cc, llvm_as = clang
    src = write(tmp_path / "src", C_FILES)
    man = run_builder("ir", tmp_path / "o.jsonl", src=str(src), compiler=cc)
    recs = {r["key"]: r for r in read_records(tmp_path / "o.jsonl")}
    assert sorted(recs) == ["mx.cpp", "sq.c", "str.c", "sum.c"]
    assert man["filters"]["compile"] == {"kept": 4, "dropped": 1}
    assert "error" in man["stats"]["failure_examples"]["broken.c"]
    for r in recs.values():
        for level, ir in r["ir"].items():
            res = assembles(ir, llvm_as)
            assert res.returncode == 0, (r["key"], level, res.stderr)
            assert "ModuleID" not in ir and "target triple" not in ir and "!llvm" not in ir and "!tbaa" not in ir
            assert not re.search(r"^!\d+ =", ir, re.M)
    assert "mul nsw i32 %0, %0" in recs["sq.c"]["ir"]["O3"]
    assert "@_Z1fii" in recs["mx.cpp"]["ir"]["Oz"]
    assert len(recs["sum.c"]["ir"]["Oz"]) < len(recs["sum.c"]["ir"]["O3"])  # -O3 vectorises the loop, -Oz does not
    assert man["stats"]["compiler"] == compiler_version(cc)


def test_clang_unstripped_ir_names_no_machine_path(clang, tmp_path):
    cc, llvm_as = clang
    src = write(tmp_path / "src", {"sub/sq.c": C_FILES["sq.c"]})
    run_builder("ir", tmp_path / "o.jsonl", src=str(src), compiler=cc, strip=False)
    (rec,) = read_records(tmp_path / "o.jsonl")
    assert rec["ir"]["Oz"].startswith("; ModuleID = 'sub/sq.c'") and str(tmp_path) not in json.dumps(rec)
    assert assembles(rec["ir"]["Oz"], llvm_as).returncode == 0
    assert strip_ir(rec["ir"]["Oz"]) != rec["ir"]["Oz"]


def test_clang_near_duplicates(clang, tmp_path):
    cc, _ = clang
    body = "".join(f"int f{i}(int x) {{ return x * {i} + {i * 7}; }}\n" for i in range(40))
    src = write(tmp_path / "src", {"one.c": body, "two.c": body.replace("return x * 39", "return x * 38")})
    run_builder("ir", tmp_path / "on.jsonl", src=str(src), compiler=cc)
    run_builder("ir", tmp_path / "off.jsonl", src=str(src), compiler=cc, dedup=False)
    assert len(read_records(tmp_path / "on.jsonl")) == 1 and len(read_records(tmp_path / "off.jsonl")) == 2
