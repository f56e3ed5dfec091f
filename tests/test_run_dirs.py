"""Run folder names (``${cs_run_dir:runs}``) for runs that read files besides their config: the key holds the
pairs' contents (training) and the evaluated adapter's files, so the same command over other inputs gets another
folder. Pinned here because that is why the resolver still reads files while Hydra resolves ``hydra.run.dir``
(issue 18, item 6): the folder is named before any stage code runs, so a resolver computed from config values alone
would give two different inputs one folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from culturespa.stages import identity
from culturespa.stages.identity import adapter_identity, config_key, run_inputs, run_key
from culturespa.utils.rundirs import run_dir_name


def test_a_training_run_folder_is_named_by_its_pairs_contents(pinned, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    training = pinned("train", "sft.pairs_dir=/pinned-pairs", "mode=specific")
    assert run_dir_name("runs", training, run_key).endswith("-25de9ee5d0")  # no pairs there: the config alone
    monkeypatch.setattr(identity, "pairs_digest", lambda folder: {"USA.jsonl": "f4ae84c7085b"})
    assert run_inputs(training) == {"pairs_content": {"USA.jsonl": "f4ae84c7085b"}}
    name = "mode-specific+model.dtype-float32+sft.pairs_dir-pinned-pairs-026b2004ef"
    assert run_dir_name("runs", training, run_key) == name
    assert config_key(training, {"pairs_content": {"USA.jsonl": "f4ae84c7085b"}}) == "026b2004ef"


def test_other_pairs_or_a_retrained_adapter_get_another_folder(pinned, tmp_path: Path) -> None:  # noqa: ANN001
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "USA.jsonl").write_text('{"q": 1}\n')
    training = pinned("train", f"sft.pairs_dir={pairs}")
    first = run_key(training)
    assert first == run_key(training)  # the same inputs: the same folder (a crashed run resumes there)
    (pairs / "USA.jsonl").write_text('{"q": 2}\n')
    assert run_key(training) != first
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"w")
    os.utime(adapter / "adapter_model.safetensors", ns=(1, 1))
    evaluation = pinned("evaluate", f"eval.adapter={adapter}")
    before = run_key(evaluation)
    assert run_inputs(evaluation) == {"eval.adapter": adapter_identity(adapter)}
    os.utime(adapter / "adapter_model.safetensors", ns=(2, 2))  # retrained in place
    assert run_key(evaluation) != before
