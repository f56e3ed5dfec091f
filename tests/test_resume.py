"""Issue 12 / 14: the same command resumes (run folders keyed by config, paste-safe), finished outputs never shrink,
two checkpoints with fallback, validation not lost to a kill, corrupt part lines kept apart, umask honoured,
``eval.adapter=latest`` and the printed next command."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from culturespa.config import compose
from culturespa.errors import CultureSPAError
from culturespa.stages.identity import pairs_digest
from culturespa.stages.run_inputs import claim
from culturespa.train.checkpoints import LAST, PREVIOUS, find_resume
from culturespa.train.synthetic import write_pairs
from culturespa.utils.jsonl import ResumableJsonl, write_json

REPO = Path(__file__).resolve().parents[1]


def _run_dir(tmp_path: Path, overrides: list[str], task: str = "train") -> str:
    cfg = compose(task, [*overrides, f"paths.log_dir={tmp_path}"])
    return str(cfg.hydra.run.dir)


def _parsed_value(override: str) -> str:
    return str(OverridesParser.create().parse_overrides([override])[0].value())


# ---- run folders ---------------------------------------------------------------------------------------------------
def test_run_dir_is_keyed_by_config_and_safe_to_paste(tmp_path: Path) -> None:
    args = ["mode=specific", "cultures=[USA,IND]", "debug=tiny", "data.fraction=0.5"]
    first = _run_dir(tmp_path, args)
    assert first == _run_dir(tmp_path, args), "the identical command must land in the same folder"
    assert first != _run_dir(tmp_path, [*args[:-1], "data.fraction=0.4"]), "another config, another folder"
    assert first != _run_dir(tmp_path, args, task="evaluate")
    name = Path(first).name
    assert all(c.isalnum() or c in "_.+-" for c in name), name
    # what train prints pastes into evaluate.py as is (no quoting), and Hydra reads the same path back
    adapter = f"{first}/adapter"
    assert _parsed_value(f"eval.adapter={adapter}") == adapter


def test_same_config_spelled_differently_shares_the_key_and_the_disk_is_not_read(tmp_path: Path) -> None:
    first = Path(_run_dir(tmp_path, ["mode=joint", "debug=tiny"]))
    other = Path(_run_dir(tmp_path, ["debug=tiny"]))  # mode=joint is the default: same config, same key
    assert first.name.rsplit("-", 1)[1] == other.name.rsplit("-", 1)[1] and first != other
    other.mkdir(parents=True)  # the name is the config's alone: an existing folder changes nothing
    assert _run_dir(tmp_path, ["mode=joint", "debug=tiny"]) == str(first)


def test_sweep_jobs_get_distinct_stable_folders(tmp_path: Path) -> None:
    cfg = compose("train", ["debug=tiny", f"paths.log_dir={tmp_path}"])
    assert str(cfg.hydra.sweep.dir) == str(tmp_path / "train" / "multirun")
    subdirs = {str(compose("train", ["debug=tiny", f"sft.lr={lr}"]).hydra.sweep.subdir) for lr in (1e-4, 2e-4)}
    assert len(subdirs) == 2


def test_a_retrained_adapter_or_regenerated_pairs_are_refused_in_the_earlier_run_folder(tmp_path: Path) -> None:
    from culturespa.evaluate.run import plan_evaluation
    from culturespa.train.run import train

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    args = ["debug=tiny", f"eval.adapter={adapter}", f"paths.log_dir={tmp_path}"]
    cfg = compose("evaluate", [*args, f"eval.output_dir={tmp_path / 'eval'}"])
    plan_evaluation(cfg)
    (tmp_path / "eval" / "answers").mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"new weights")  # retrained in place
    assert _run_dir(tmp_path, args, task="evaluate") == str(cfg.hydra.run.dir)  # the same folder ...
    with pytest.raises(CultureSPAError, match="eval.adapter changed since"):  # ... which keeps its answers
        plan_evaluation(compose("evaluate", [*args, f"eval.output_dir={tmp_path / 'eval'}"]))

    pairs = write_pairs(tmp_path / "pairs", {"USA": 16})
    out = tmp_path / "train"
    train_args = ["debug=tiny", "cultures=[USA]", f"sft.pairs_dir={pairs}", f"sft.output_dir={out}"]
    (out / "checkpoints").mkdir(parents=True)
    claim(out, {"pairs_content": pairs_digest(pairs)}, ["checkpoints"])
    write_pairs(pairs, {"USA": 17})  # regenerated
    with pytest.raises(CultureSPAError, match="pairs_content changed since"):  # before any model is loaded
        train(compose("train", train_args))


# ---- eval.adapter=latest and the printed next command --------------------------------------------------------------
def _fake_adapter(folder: Path, model: str, mode: str = "joint") -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": model}))
    (folder / "culturespa.json").write_text(json.dumps({"base_model": model, "mode": mode}))


def test_eval_adapter_latest_picks_the_newest_matching_adapter(tmp_path: Path) -> None:
    from culturespa.evaluate.latest import resolve_latest

    runs = tmp_path / "logs" / "train" / "runs"
    _fake_adapter(runs / "old-1" / "adapter", "tiny_random")
    _fake_adapter(runs / "other-model-2" / "adapter", "smollm2_135m")
    _fake_adapter(runs / "new-3" / "adapter", "tiny_random")
    os.utime(runs / "old-1" / "adapter" / "culturespa.json", (1, 1))
    cfg = compose("evaluate", ["debug=tiny", "eval.adapter=latest", f"paths.log_dir={tmp_path / 'logs'}"])
    resolve_latest(cfg)
    assert cfg.eval.adapter == str(runs / "new-3" / "adapter")
    with open_dict(cfg):
        cfg.eval.adapter = "latest"
        cfg.model.name = "llama3_8b_instruct"
    with pytest.raises(CultureSPAError, match="eval.adapter=latest: no finished joint adapter for model=llama3"):
        resolve_latest(cfg)


def test_next_command_after_training_pastes_into_evaluate(tmp_path: Path) -> None:
    from culturespa.train.run import TrainSettings, evaluate_command

    run = Path(_run_dir(tmp_path, ["debug=tiny", "cultures=[USA,IND]", "sft.lr=0.001"]))
    cfg = compose("train", ["debug=tiny", "cultures=[USA,IND]", "sft.lr=0.001"])  # the running app's overrides
    command = evaluate_command(TrainSettings.from_config(cfg).overrides, run / "adapter")
    # the adapter path needs no quoting; the choices that evaluation must share come along, training knobs do not
    assert command == f"python evaluate.py eval.adapter={run / 'adapter'} debug=tiny 'cultures=[USA,IND]'"
    assert _parsed_value(command.split()[2]) == str(run / "adapter")


# ---- checkpoints: keep two, fall back -------------------------------------------------------------------------------
def _ckpt(path: Path, step: int) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": step}, path)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_unreadable_last_checkpoint_falls_back_to_previous(tmp_path: Path, caplog, damage: str) -> None:
    _ckpt(tmp_path / PREVIOUS, 4)
    _ckpt(tmp_path / LAST, 6)
    data = (tmp_path / LAST).read_bytes()
    (tmp_path / LAST).write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with caplog.at_level(logging.WARNING, logger="culturespa.train"):
        found = find_resume(tmp_path, True)
    assert found is not None and found.path == str(tmp_path / PREVIOUS) and found.step == 4
    assert "last.ckpt: unreadable checkpoint" in caplog.text
    assert not (tmp_path / LAST).exists() and (tmp_path / (LAST + ".corrupt")).exists()


def test_no_readable_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / LAST).write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CultureSPAError, match=r"no readable checkpoint \(last.ckpt truncated or corrupt\)"):
        find_resume(tmp_path, True)
    assert find_resume(tmp_path / "none", True) is None


TRAIN = [
    "model=tiny_random",
    "logger=csv",
    "cultures=[USA]",
    "sft.global_batch_size=4",
    "sft.micro_batch_size=2",
    "trainer.enable_progress_bar=false",
    "data.val_fraction=0.25",
]


def _checkpointing_train(make_cfg, pairs: Path, *overrides: str):  # noqa: ANN001, ANN202
    """A train config per output folder, checkpointing every step (so a kill leaves one to resume from)."""

    def cfg(out: Path):  # noqa: ANN202
        extra = [f"sft.pairs_dir={pairs}", f"sft.output_dir={out}", f"logger.csv.save_dir={out}"]
        return make_cfg("train", [*TRAIN, "sft.save_every_n_steps=1", *overrides, *extra])

    return cfg


class _KillOnValidation(L.Callback):
    """A kill right after the epoch's last checkpoint, before its validation finishes."""

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            raise RuntimeError("simulated kill")


@pytest.mark.slow
def test_validation_lost_to_a_kill_is_computed_on_resume(make_cfg, tmp_path: Path) -> None:
    from culturespa.train.checkpoints import read_meta
    from culturespa.train.run import train

    cfg = _checkpointing_train(make_cfg, write_pairs(tmp_path / "pairs", {"USA": 16}), "trainer.num_sanity_val_steps=0")

    straight = train(cfg(tmp_path / "a"))
    expected = read_meta(straight["adapters"]["joint"])["train"]["metrics"]["val/loss"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg(tmp_path / "b"), callbacks=[_KillOnValidation()])
    assert (tmp_path / "b" / "checkpoints" / "joint" / LAST).is_file()
    resumed = train(cfg(tmp_path / "b"))
    meta = read_meta(resumed["adapters"]["joint"])
    assert meta["train"]["metrics"]["val/loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_training_resumes_from_previous_when_last_is_truncated(make_cfg, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from culturespa.train.run import train
    from tests.test_train_run import KillAt

    cfg = _checkpointing_train(make_cfg, write_pairs(tmp_path / "pairs", {"USA": 24}), "sft.max_steps=4")

    straight = train(cfg(tmp_path / "a"))
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(cfg(tmp_path / "b"), callbacks=[KillAt(3)])
    ckpts = tmp_path / "b" / "checkpoints" / "joint"
    assert (ckpts / PREVIOUS).is_file()  # two kept
    (ckpts / LAST).write_bytes((ckpts / LAST).read_bytes()[:1000])
    resumed = train(cfg(tmp_path / "b"))
    a = load_file(Path(straight["adapters"]["joint"]) / "adapter_model.safetensors")
    b = load_file(Path(resumed["adapters"]["joint"]) / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- part files, umask, conf/local ---------------------------------------------------------------------------------
def test_corrupt_middle_line_keeps_the_good_lines_after_it(tmp_path: Path, caplog) -> None:
    out = tmp_path / "x.jsonl"
    part = tmp_path / "x.jsonl.part"
    lines = [json.dumps({"id": i}) for i in range(5)]
    lines[2] = '{"id": 2, "raw": "bit rot'
    part.write_text("\n".join(lines) + "\n" + '{"id": 5')  # and a torn last line
    with caplog.at_level(logging.WARNING, logger="culturespa.utils.jsonl"):
        store = ResumableJsonl(out, key=lambda r: str(r["id"]))
    assert sorted(store.records) == ["0", "1", "3", "4"]
    assert store.bad_lines == [3] and store.dropped_torn_line
    assert f"{part}:3: corrupt line skipped" in caplog.text
    assert (tmp_path / "x.jsonl.part.bad").read_text() == lines[2] + "\n"  # nothing is lost
    store.append({"id": 2})
    store.close()
    assert sorted(ResumableJsonl(out, key=lambda r: str(r["id"])).records) == ["0", "1", "2", "3", "4"]


def test_outputs_and_adapters_honour_the_umask(tmp_path: Path) -> None:
    from culturespa.prompts.builder import PromptStyle
    from culturespa.train.checkpoints import AdapterExport

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644

        class _Model:
            def save_pretrained(self, folder: str) -> None:
                (Path(folder) / "adapter_model.safetensors").write_bytes(b"w")

        class _Trainer:
            is_global_zero, global_step, current_epoch, world_size, callback_metrics = True, 1, 0, 1, {}
            strategy = None  # not FSDP: the module's own tensors are whole

        class _Module:
            device, samples_seen, model = torch.device("cpu"), 1, _Model()

            def all_gather(self, t: torch.Tensor) -> torch.Tensor:
                return t

        style = PromptStyle.from_config(compose("train").templates, compose("train").prompt)
        AdapterExport(tmp_path / "adapter", style, "x: 1\n", {}).on_train_end(_Trainer(), _Module())  # type: ignore[arg-type]
        assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o755
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "adapter").iterdir())
    finally:
        os.umask(old)


def test_conf_local_is_git_ignored_and_loaded(tmp_path: Path) -> None:
    probe = REPO / "conf" / "local" / "default.yaml"
    result = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO, check=False)
    assert result.returncode == 0, "conf/local/ must be git-ignored (README promises it)"
    assert "optional local: default" in (REPO / "conf" / "base.yaml").read_text()  # every entry point loads base


# ---- a finished answers file is never replaced by fewer records -----------------------------------------------------
def test_smaller_question_set_never_shrinks_a_finished_answers_file(make_cfg, tmp_path: Path) -> None:
    from culturespa.generate.run import generate

    args = ["stage=answers", "model=tiny_random", "answers.input=wvs", "logger=csv", "decoding=logprob"]
    args += ["answers.setting=aware", "cultures=[USA]", f"answers.output_dir={tmp_path / 'a'}"]
    generate(make_cfg("generate", [*args, "answers.limit=4"]))
    final = tmp_path / "a" / "aware_USA.jsonl"
    before = final.read_bytes()
    assert len(before.splitlines()) == 4
    with pytest.raises(CultureSPAError, match=r"aware_USA.jsonl: holds 4 finished records, 2 of which this run"):
        generate(make_cfg("generate", [*args, "answers.limit=2"]))
    assert final.read_bytes() == before
    overwritten = generate(make_cfg("generate", [*args, "answers.limit=2", "overwrite=true"]))  # asked for: allowed
    assert len(Path(overwritten["files"]["USA"]).read_text().splitlines()) == 2


def test_omegaconf_resolves_run_dir_without_a_hydra_app(tmp_path: Path) -> None:
    cfg = compose("pipeline", ["debug=tiny", f"paths.log_dir={tmp_path}"])
    assert OmegaConf.select(cfg, "hydra.run.dir").startswith(str(tmp_path / "pipeline" / "runs" / "debug-tiny-"))


def test_model_cache_build_honours_the_umask(tmp_path: Path) -> None:
    from culturespa.models.loader import _build_atomically

    old = os.umask(0o027)
    try:
        _build_atomically(tmp_path / "models" / "m", lambda folder: (folder / "model.safetensors").write_bytes(b"w"))
    finally:
        os.umask(old)
    target = tmp_path / "models" / "m"
    assert target.stat().st_mode & 0o777 == 0o750
    assert (target / "model.safetensors").stat().st_mode & 0o777 == 0o640


def test_regenerated_pairs_never_resume_the_earlier_checkpoints(tmp_path: Path) -> None:
    from culturespa.train.run import TrainSettings, fingerprint

    pairs = write_pairs(tmp_path / "pairs", {"USA": 4})
    args = ["debug=tiny", "cultures=[USA]", f"sft.pairs_dir={pairs}"]
    settings = TrainSettings.from_config(compose("train", args))
    before, print_before = _run_dir(tmp_path, args), fingerprint(settings, "joint")
    (pairs / "USA.jsonl").write_text((pairs / "USA.jsonl").read_text().splitlines()[0] + "\n")
    assert _run_dir(tmp_path, args) == before  # the folder is the config's (the stage refuses it: test above)
    assert fingerprint(settings, "joint") != print_before  # and a job never resumes its checkpoints


def test_a_specific_job_keeps_its_checkpoints_when_another_cultures_pairs_change(tmp_path: Path) -> None:
    from culturespa.train.run import TrainSettings, fingerprint

    pairs = write_pairs(tmp_path / "pairs", {"USA": 4, "CHN": 4})
    args = ["debug=tiny", "mode=specific", "cultures=[USA,CHN]", f"sft.pairs_dir={pairs}"]
    settings = TrainSettings.from_config(compose("train", args))
    usa, chn = fingerprint(settings, "USA", ["USA"]), fingerprint(settings, "CHN", ["CHN"])
    (pairs / "CHN.jsonl").write_text((pairs / "CHN.jsonl").read_text().splitlines()[0] + "\n")
    assert fingerprint(settings, "USA", ["USA"]) == usa  # USA's adapter is not retrained for CHN's new pairs
    assert fingerprint(settings, "CHN", ["CHN"]) != chn


def test_interrupted_evaluation_redoes_its_chunk_whole(make_cfg, monkeypatch) -> None:
    """Answers computed in other batches differ in the last bits on CPU: a resumed chunk is recomputed whole."""
    from culturespa.evaluate.run import evaluate
    from culturespa.infer import engine as engine_mod

    args = ["model=tiny_random", "logger=none", "eval.limit=3", "cultures=USA", "decoding=logprob", "prompt=p1"]
    cfg = make_cfg("evaluate", [*args, "answers.resume_chunk=2"])
    path = Path(evaluate(cfg)["alignment"]).parent / "answers" / "p1_USA.jsonl"
    lines = path.read_text().splitlines()
    path.with_name(path.name + ".part").write_text(lines[0] + "\n")  # killed inside the first chunk
    path.unlink()
    asked: list[str] = []
    original = engine_mod.Engine.answer

    def counting(self, requests, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        asked.append(",".join(r.key for r in requests))
        return original(self, requests, *a, **k)

    monkeypatch.setattr(engine_mod.Engine, "answer", counting)
    evaluate(cfg)
    keys = [f"{json.loads(line)['id']}|USA|0" for line in lines]
    assert asked == [f"{keys[0]},{keys[1]}", keys[2]]  # the first chunk whole (its batch), then the second
    assert path.read_text().splitlines() == lines


def test_reading_the_umask_does_not_change_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting and restoring the umask to read it applies 0o022 for an instant to other threads' new files."""
    from culturespa.utils import perms

    old = os.umask(0o007)
    try:
        monkeypatch.setattr(perms.os, "umask", lambda mask: pytest.fail("the umask was set to read it"))
        assert perms.current_umask() == 0o007
    finally:
        monkeypatch.undo()
        os.umask(old)


# ---- wall-time checkpoints and the resume line (issue 22) -----------------------------------------------------------
class _SlowSteps(L.Callback):
    """Each micro-batch takes ``seconds`` longer, so the wall-time checkpoint comes long before any step one."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: object) -> None:
        time.sleep(self.seconds)


@pytest.mark.slow
def test_kill_before_the_first_step_checkpoint_resumes_from_the_wall_time_one(make_cfg, tmp_path: Path, caplog) -> None:
    from safetensors.torch import load_file

    from culturespa.train.run import train
    from tests.test_train_run import KillAt

    pairs = write_pairs(tmp_path / "pairs", {"USA": 24})
    cfg = _checkpointing_train(make_cfg, pairs, "sft.max_steps=4", "sft.save_every_n_steps=1000")
    with caplog.at_level(logging.INFO):
        straight = train(cfg(tmp_path / "a"))
    assert "train joint: no checkpoint yet: starting from step 0" in caplog.text

    slow = _checkpointing_train(
        make_cfg, pairs, "sft.max_steps=4", "sft.save_every_n_steps=1000", "sft.checkpoint_minutes=0.02"
    )  # 1.2 s; a step takes 2 x 0.7 s here
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(slow(tmp_path / "b"), callbacks=[_SlowSteps(0.7), KillAt(3)])
    found = find_resume(tmp_path / "b" / "checkpoints" / "joint", True)
    assert found is not None and found.step == 3 and found.reason == "wall time"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed = train(slow(tmp_path / "b"))
    written = time.strftime("%H:%M", time.localtime(found.written))
    assert f"resuming from step 3 of 4 (checkpoint written {written}, reason: wall time)" in caplog.text
    a = load_file(Path(straight["adapters"]["joint"]) / "adapter_model.safetensors")
    b = load_file(Path(resumed["adapters"]["joint"]) / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # byte-exact, as step checkpoints


def test_resume_line_names_step_time_and_reason(tmp_path: Path) -> None:
    from culturespa.train.checkpoints import WHY_KEY, resume_line

    assert resume_line(None, 10) == "no checkpoint yet: starting from step 0"
    assert resume_line(None, 10, resume=False) == "sft.resume=false: starting from step 0"
    written = time.mktime((2026, 1, 2, 9, 5, 0, 0, 0, -1))
    torch.save({"state_dict": {}, "global_step": 7, WHY_KEY: {"reason": "steps", "written": written}}, tmp_path / LAST)
    line = resume_line(find_resume(tmp_path, True), 50)
    assert line == f"resuming from step 7 of 50 (checkpoint written 2026-01-02 09:05, reason: steps): {tmp_path / LAST}"
    _ckpt(tmp_path / LAST, 4)  # a checkpoint from before the record: its file time, no reason
    assert resume_line(find_resume(tmp_path, True), 50).startswith("resuming from step 4 of 50 (checkpoint written ")


@pytest.mark.parametrize("minutes", [0, -1, "often", True])
def test_checkpoint_minutes_must_be_positive_or_null(minutes: object) -> None:
    from culturespa.train.checkpoints import checkpoint_callback

    with pytest.raises(CultureSPAError, match=rf"sft.checkpoint_minutes={minutes!r} must be a positive number"):
        checkpoint_callback("x", 50, minutes)  # type: ignore[arg-type]
    assert checkpoint_callback("x", 50, None).minutes is None
