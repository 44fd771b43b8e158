"""What the README promises about pickle checkpoints: a ``.bin`` model is refused without ``--allow-pickle``; with
it, the weights load through ``torch.load(weights_only=True)``, so a pickle that would run code is still refused."""

from __future__ import annotations

import sys

import pytest
import torch

from xlt.errors import XltError
from xlt.models import load_model, tiny_model


class _Payload:
    """A pickle that runs code when unpickled without weights_only (it writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture()
def bin_folder(tmp_path):
    model = tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=4)
    model.save_pretrained(tmp_path / "bin")
    for f in (tmp_path / "bin").glob("*.safetensors"):  # the same weights as a pickle, the format of older checkpoints
        f.unlink()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    return tmp_path / "bin", model


def test_pickle_refused_without_the_flag_and_loaded_with_it(bin_folder):
    folder, model = bin_folder
    with pytest.raises(XltError, match="only pickle") as e:
        load_model(folder)
    assert "--allow-pickle" in e.value.fix
    back = load_model(folder, allow_pickle=True)
    ids = torch.arange(10).view(1, -1)
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, model(input_ids=ids).logits)


def test_code_in_a_pickle_never_runs_even_with_the_flag(bin_folder, tmp_path):
    folder, model = bin_folder
    marker = tmp_path / "pwned"
    sd = dict(model.state_dict())
    sd["payload"] = _Payload(marker)
    torch.save(sd, folder / "pytorch_model.bin")
    with pytest.raises(XltError, match="cannot load"):
        load_model(folder, allow_pickle=True)
    assert not marker.exists()


def test_cli_refuses_a_pickle_source_with_one_clear_error(bin_folder, tmp_path, monkeypatch, capsys, parallel_jsonl):
    from xlt.cli.main import main

    folder, _ = bin_folder
    monkeypatch.setattr(sys, "argv", ["xlt", "adapt", "--source", str(folder), "--corpus", str(parallel_jsonl),
                                      "--out", str(tmp_path / "run"), "--steps", "2", "--vocab-size", "300",
                                      "--no-progress"])
    with pytest.raises(SystemExit) as e:
        main()
    text = capsys.readouterr().err
    assert e.value.code == 2 and "only pickle (*.bin) weights" in text and "--allow-pickle" in text
    assert "Traceback" not in text and not (tmp_path / "run").exists()
