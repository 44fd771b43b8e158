"""Script identification and the script-based off-target rate."""

from __future__ import annotations

import pytest

from xlt.errors import XltError
from xlt.eval.offtarget import off_target_rate
from xlt.eval.script import language_script, lid_for, script_lid, text_script


@pytest.mark.parametrize("text,script", [
    ("Habari ya asubuhi", "LATIN"), ("Привет, мир", "CYRILLIC"), ("नमस्ते दुनिया", "DEVANAGARI"),
    ("你好，世界", "HAN"), ("こんにちは世界", "HAN"), ("مرحبا بالعالم", "ARABIC"), ("123 ... !", "NONE"),
    ("Hello мир мир", "CYRILLIC"),  # 6 Cyrillic letters against 5 Latin ones
])
def test_text_script(text, script):
    assert text_script(text) == script


def test_language_scripts():
    assert language_script("sw") == "LATIN" and language_script("hi") == "DEVANAGARI"
    assert language_script("zh") == "HAN" and language_script("ru") == "CYRILLIC" and language_script("ny") == "LATIN"


def test_off_target_by_script():
    hin = ["नमस्ते दुनिया", "यह एक वाक्य है"]
    assert off_target_rate(hin, "hi", lid=script_lid("hi")).rate == 0.0
    assert off_target_rate(["Hello world", "Good day"], "hi", lid=script_lid("hi")).rate == 1.0
    r = off_target_rate(["Moni bwanji", "Hello", "Привет"], "ny", lid=script_lid("ny"))
    assert r.off_target == 1 and r.labels == {"ny": 2, "script:CYRILLIC": 1}
    assert lid_for("py3langid", "sw") is None
    with pytest.raises(XltError, match="unknown language identifier"):
        lid_for("fasttext", "sw")
