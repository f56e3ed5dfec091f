"""Checks before any work (W&B key, model availability, writable output, disk room for the model cache), run by every
entry point: one line naming the setting or folder and the fix, exit 1, nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from culturespa import preflight as pf
from culturespa.entry import task_wrapper
from culturespa.errors import CultureSPAError
from culturespa.models.loader import ModelSpec, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
NO_KEY = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL", "WANDB_DIR")


def _no_wandb_key(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for key in NO_KEY:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "wandb-config"))
    monkeypatch.chdir(home)


def test_wandb_credentials_found_where_wandb_looks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_wandb_key(monkeypatch, tmp_path)
    assert pf.wandb_credentials() is None
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine example.org login user password secret\n")
    netrc.chmod(0o600)
    assert pf.wandb_credentials() is None  # an entry for another host is not a W&B key
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert pf.wandb_credentials() == str(netrc)
    netrc.unlink()
    settings = tmp_path / "wandb-config" / "settings"
    settings.parent.mkdir()
    settings.write_text("[default]\napi_key = " + "k" * 40 + "\n")
    assert pf.wandb_credentials() == str(settings)
    settings.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert pf.wandb_credentials() == "WANDB_API_KEY"


ENTRY_POINTS = {
    "train": ["train.py", "debug=tiny", "logger=wandb"],
    "questions": ["generate.py", "stage=questions", "debug=tiny", "logger=wandb"],
    "evaluate": ["evaluate.py", "debug=tiny", "logger=wandb", "cultures=USA"],
    "pipeline": ["-m", "culturespa.pipeline", "debug=tiny", "logger=wandb"],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_wandb_online_without_key_fails_at_start(entry: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in NO_KEY}
    env.update(HOME=str(tmp_path), WANDB_MODE="online", WANDB_CONFIG_DIR=str(tmp_path / "cfg"), PYTHONPATH=str(REPO))
    work = tmp_path / "work"
    args = [*ENTRY_POINTS[entry], f"paths.work_dir={work}", f"hydra.run.dir={tmp_path / 'run'}"]
    args += [f"+pipeline.root={tmp_path / 'pipe'}"] if entry == "pipeline" else []
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert lines[-1].startswith("error: logger.wandb.mode=online but no W&B API key")
    assert "WANDB_MODE=offline" in lines[-1] and "wandb login" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not work.exists() and not (tmp_path / "pipe").exists()  # nothing was done before the check
    assert time.perf_counter() - start < 120


def test_offline_uncached_hub_id_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = ModelSpec(name="llama", source="hf", path="meta-llama/Meta-Llama-3-8B-Instruct")
    with pytest.raises(CultureSPAError, match=r"Meta-Llama-3-8B-Instruct: not in the Hugging Face cache") as err:
        load_tokenizer(spec)
    assert "huggingface-cli download meta-llama/Meta-Llama-3-8B-Instruct" in str(err.value)
    cfg = make_cfg("generate", ["stage=answers", "model=llama3_8b_instruct", "answers.input=wvs"])
    with pytest.raises(CultureSPAError, match="HF_HUB_OFFLINE"):
        pf.preflight(cfg)


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in: a read-only-mode folder, or (root ignores modes) a sysfs folder."""
    if os.geteuid() == 0:
        return Path("/sys/culturespa-output")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


def test_read_only_output_folder_fails_before_work(make_cfg, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    ro = _read_only_folder(tmp_path)
    out = ro / "questions" / "generated.jsonl"
    cfg = make_cfg("generate", ["stage=questions", "model=tiny_random", f"questions.output={out}", "logger=csv"])
    ran = []
    with pytest.raises(SystemExit) as exit_:
        task_wrapper(lambda c: ran.append(c))(cfg)
    assert exit_.value.code == 1 and not ran
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: {ro}/questions: cannot write there")
    assert "paths.work_dir=" in err[0] and not out.parent.exists()


def test_no_room_for_the_model_cache(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(REPO / ".cache" / "models" / "smollm2_135m", cache / "models" / "smollm2_135m")
    cfg = make_cfg("generate", ["stage=answers", "model=tiny_random", f"paths.cache_dir={cache}", "logger=csv"])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2 * 10**6, 2 * 10**6))
    with pytest.raises(CultureSPAError, match=r"cache/models/tiny_random: 1.9 MB free, but building the tiny_random"):
        pf.preflight(cfg)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 10**11))
    pf.preflight(cfg)  # room enough: nothing built here, nothing raised
    assert not (cache / "models" / "tiny_random").exists()
