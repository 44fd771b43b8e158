"""No tracked file names a path of the machine it was made on (benchmark JSON included)."""

import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_tracked_files_hold_no_machine_path():
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    needles = {str(ROOT), str(Path.home()) + "/", str(Path(tempfile.gettempdir()).resolve()) + "/"}
    needles = {n.encode() for n in needles if len(n) > 2}  # "/" alone says nothing
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if path.is_file() and path.stat().st_size < 5_000_000:
            data = path.read_bytes()
            found += [f"{name.decode()}: {n.decode()}" for n in needles if n in data]
    assert not found, found
