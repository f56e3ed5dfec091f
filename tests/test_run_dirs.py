"""Run folder names (``${cs_run_dir:}``) come from config values alone: resolving ``hydra.run.dir`` reads no file
(issue 18). What a run reads from outside its config (the pairs' contents, the evaluated adapter's files) is checked by
the stage in the folder it writes to (``culturespa/stages/run_inputs.py``): the same command over other inputs is
refused there with one line before anything is mixed or overwritten, and a rerun over the same inputs resumes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.stages import run_inputs as ledger
from culturespa.stages.identity import config_key
from culturespa.stages.run_inputs import LEDGER, TRAIN_OUTPUTS, adapter_identity, claim
from culturespa.utils.rundirs import run_dir_name


def test_a_run_folder_name_is_the_config_alone(pinned, tmp_path: Path) -> None:  # noqa: ANN001
    training = pinned("train", "sft.pairs_dir=/pinned-pairs", "mode=specific")
    name = "mode-specific+model.dtype-float32+sft.pairs_dir-pinned-pairs-6427f225dd"
    assert run_dir_name(training, config_key) == name
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "USA.jsonl").write_text('{"q": 1}\n')
    training = pinned("train", f"sft.pairs_dir={pairs}")
    before = str(training.hydra.run.dir)
    (pairs / "USA.jsonl").write_text('{"q": 2}\n')  # other pairs at the same path: the same folder, the stage decides
    assert str(training.hydra.run.dir) == before


def test_an_adapter_retrained_in_place_has_another_identity(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"w")
    os.utime(adapter / "adapter_model.safetensors", ns=(1, 1))
    before = adapter_identity(adapter)
    assert before == {"path": str(adapter.resolve()), "files": [["adapter_model.safetensors", 1, 1]]}
    os.utime(adapter / "adapter_model.safetensors", ns=(2, 2))  # retrained in place
    assert adapter_identity(adapter) != before
    assert adapter_identity(None) is None and adapter_identity(tmp_path / "gone") == str(tmp_path / "gone")


def test_a_folder_refuses_outputs_from_other_inputs_and_resumes_with_the_same(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    first = {"pairs_content": {"USA.jsonl": "aaa"}}
    claim(folder, first, TRAIN_OUTPUTS)
    assert (folder / LEDGER).is_file()
    (folder / "checkpoints").mkdir()
    claim(folder, first, TRAIN_OUTPUTS)  # the crashed run again: it resumes
    other = {"pairs_content": {"USA.jsonl": "bbb"}}
    with pytest.raises(CultureSPAError, match=r"run: holds outputs made from other inputs \(pairs_content changed"):
        claim(folder, other, TRAIN_OUTPUTS)
    assert ledger._read(folder / LEDGER) == first  # the refused run changed nothing
    claim(folder, other, TRAIN_OUTPUTS, restart=True)  # sft.resume=false: the user starts over there
    assert ledger._read(folder / LEDGER) == other


def test_a_folder_without_outputs_takes_the_new_inputs(tmp_path: Path) -> None:
    claim(tmp_path, {"eval.adapter": "a"}, ("answers",))
    claim(tmp_path, {"eval.adapter": "b"}, ("answers",))  # crashed before its first answer: nothing to protect
    assert ledger._read(tmp_path / LEDGER) == {"eval.adapter": "b"}
    claim(tmp_path / "none", {}, ("answers",))  # a run that reads nothing outside its config records nothing
    assert not (tmp_path / "none").exists()
