"""Bad bytes, broken weights, a full disk, an unwritable folder: one line naming the file and the fix, exit 1, and
nothing already written is lost (instead of a traceback)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from culturespa.entry import task_wrapper
from culturespa.errors import CultureSPAError
from culturespa.evaluate.adapters import resolve_adapters
from culturespa.generate.run import generate
from culturespa.models.loader import COMPLETE_MARKER, ModelSpec, load_model, resolve_model_dir
from culturespa.utils import jsonl
from culturespa.utils.jsonl import write_json

REPO = Path(__file__).resolve().parents[1]


def _one_line_exit(func, *args, capsys) -> str:  # noqa: ANN001
    """Run ``func`` as an entry point does; return the one error line it printed (and check it exited 1)."""
    with pytest.raises(SystemExit) as exit_:
        task_wrapper(func)(*args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]) and "Traceback" not in err, err[-2000:]
    return errors[0]


# ---- non-UTF-8 input -----------------------------------------------------------------------------------------------
def test_non_utf8_question_file(make_cfg, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    good = {"id": "q1", "text": "Is trust important?", "options": ["Yes", "No"], "first_option": 1}
    path = tmp_path / "questions.jsonl"
    path.write_bytes(json.dumps(good).encode() + b"\n" + b'{"id": "q2", "text": "Caf\xe9?"}\n')
    cfg = make_cfg("generate", ["stage=answers", "model=tiny_random", f"answers.input={path}", "logger=csv"])
    line = _one_line_exit(generate, cfg, capsys=capsys)
    assert line == f"error: {path}:2: not UTF-8 text (byte 0xe9 at column 26); re-save the file as UTF-8"


@pytest.mark.parametrize("layout", ["jsonl", "json"])
def test_non_utf8_predictions_file(make_cfg, tmp_path: Path, layout: str) -> None:  # noqa: ANN001
    from culturespa.evaluate.run import evaluate

    path = tmp_path / f"answers.{layout}"
    if layout == "jsonl":
        path.write_bytes(b'{"id": "Q1", "answer": 1}\n{"id": "Q2", "answer": "\xff"}\n')
        where = f"{path}:2"
    else:
        path.write_bytes(b'[\n {"id": "Q1", "answer": 1},\n {"id": "Q2", "answer": "\xff"}\n]\n')
        where = f"{path}:3"
    cfg = make_cfg(
        "evaluate", ["cultures=USA", "eval.source=predictions", f"eval.predictions.path={path}", "logger=csv"]
    )
    with pytest.raises(CultureSPAError, match=rf"^{where}: not UTF-8 text \(byte 0xff"):
        evaluate(cfg)


# ---- broken weights ------------------------------------------------------------------------------------------------
def _tiny_adapter(folder: Path, tmp_path: Path) -> ModelSpec:
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model

    from culturespa.config import compose

    cfg = compose("evaluate", ["model=tiny_random", "model.dtype=float32"], output_dir=tmp_path / "run")
    model = load_model(ModelSpec.from_config(cfg.model), cfg.paths.cache_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    return OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True)), cfg.paths.cache_dir


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_broken_adapter_weights(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "adapter"
    model_cfg, cache = _tiny_adapter(folder, tmp_path)
    resolve_adapters(str(folder), ["USA"], model_cfg, cache)  # whole: fine
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with pytest.raises(CultureSPAError) as err:
        resolve_adapters(str(folder), ["USA"], model_cfg, cache)
    message = str(err.value)
    assert message.startswith(f"{weights}: ") and "train the adapter again" in message
    assert ("truncated" if damage == "truncated" else "not a safetensors file") in message


def _copy_tiny_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(REPO / ".cache" / "models" / "smollm2_135m", cache / "models" / "smollm2_135m")
    shutil.copytree(REPO / ".cache" / "models" / "tiny_random", cache / "models" / "tiny_random")
    return cache


def _truncate(file: Path) -> None:
    with file.open("r+b") as handle:
        handle.truncate(file.stat().st_size // 3)


def test_truncated_built_model_cache_is_rebuilt(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    cache = _copy_tiny_cache(tmp_path)
    spec = ModelSpec(**{**_tiny_spec_fields(tmp_path), "dtype": "float32"})
    reference = {k: v.clone() for k, v in load_model(spec, cache_dir=cache).state_dict().items()}  # not mmapped
    weights = cache / "models" / "tiny_random" / "model.safetensors"
    _truncate(weights)
    with caplog.at_level(logging.WARNING):
        rebuilt = load_model(spec, cache_dir=cache)
    assert f"{weights}: truncated" in caplog.text and "rebuilding the tiny_random model cache" in caplog.text
    assert (weights.parent / COMPLETE_MARKER).is_file()
    assert all(torch.equal(a, b) for a, b in zip(reference.values(), rebuilt.state_dict().values(), strict=True))


def _tiny_spec_fields(tmp_path: Path) -> dict:
    from omegaconf import OmegaConf

    from culturespa.config import compose

    cfg = compose("train", ["model=tiny_random"], output_dir=tmp_path / "run")
    fields = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in fields.items() if k in ModelSpec.__dataclass_fields__}


def test_truncated_local_model_folder_is_one_line(tmp_path: Path) -> None:
    local = tmp_path / "my-model"
    shutil.copytree(REPO / ".cache" / "models" / "tiny_random", local)
    _truncate(local / "model.safetensors")
    spec = ModelSpec(name="mine", source="hf", path=str(local), dtype="float32")
    with pytest.raises(CultureSPAError, match=rf"^{local}/model.safetensors: truncated \(\d+ of \d+ bytes\); copy"):
        resolve_model_dir(spec)


# ---- full disk, unwritable folder ----------------------------------------------------------------------------------
class FullDisk:
    """A file handle whose writes fail with ENOSPC once ``budget`` writes went through."""

    def __init__(self, handle, budget: int) -> None:  # noqa: ANN001
        self._handle, self.budget = handle, budget

    def write(self, text: str) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= 1
        return self._handle.write(text)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._handle, name)


ANSWERS = ["stage=answers", "model=tiny_random", "answers.input=wvs", "answers.limit=6", "decoding=logprob"]
ANSWERS += ["engine.batch_size=2", "logger=csv"]


def test_full_disk_while_answering(make_cfg, tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    generate(make_cfg("generate", [*ANSWERS, f"answers.output_dir={tmp_path / 'ref'}"]))
    args = [*ANSWERS, f"answers.output_dir={tmp_path / 'out'}"]
    original_init = jsonl.ResumableJsonl.__init__

    def init(self, *a, **k) -> None:  # noqa: ANN001, ANN002, ANN003
        original_init(self, *a, **k)
        self._handle = FullDisk(self._handle, budget=3)

    with monkeypatch.context() as m:
        m.setattr(jsonl.ResumableJsonl, "__init__", init)
        line = _one_line_exit(generate, make_cfg("generate", args), capsys=capsys)
    part = tmp_path / "out" / "unaware.jsonl.part"
    assert line.startswith(f"error: {part}: no space left on the device")
    assert "rerun the same command" in line
    assert len(part.read_text().splitlines()) == 3  # what was written before the disk filled up is kept
    generate(make_cfg("generate", args))  # space again: the same command resumes and finishes
    assert (tmp_path / "out" / "unaware.jsonl").read_bytes() == (tmp_path / "ref" / "unaware.jsonl").read_bytes()


def test_full_disk_keeps_the_old_json(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    path = tmp_path / "stats.json"
    write_json(path, {"kept": True})

    def no_space(fd: int) -> None:  # the disk filled up: the data cannot be made durable
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CultureSPAError, match=rf"^{path}: no space left on the device"):
        write_json(path, {"kept": False})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # no temp file left behind


def test_unwritable_file_deep_in_a_run_is_one_line(capsys) -> None:  # noqa: ANN001
    def stage(cfg: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/shared/results/alignment.json")

    line = _one_line_exit(stage, None, capsys=capsys)
    assert line.startswith("error: /shared/results/alignment.json: cannot write there (Permission denied)")
