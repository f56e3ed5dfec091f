"""Issue 22 item 6: third-party start-up noise is dropped at its source, and only it: a short training run's console,
an evaluation of its adapter and a generate stage show none of the known messages, while other records of the same
loggers still print. (Before every entry point called ``quiet_third_party``, evaluating an adapter printed the
bitsandbytes kernel lookup and the ``is_gradient_checkpointing`` FutureWarning.)"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from culturespa.train.synthetic import write_pairs
from culturespa.utils.logs import QUIET_LOG_MESSAGES, quiet_third_party

REPO = Path(__file__).resolve().parents[1]
NOISE = (
    "Failed to load CPU gemm_4bit_forward",  # bitsandbytes
    "litlogger",  # Lightning's advert
    "is_gradient_checkpointing",  # transformers FutureWarning
    "isinstance(treespec, LeafSpec)",  # torch deprecation inside Lightning
    "anonymous setting has no effect",  # W&B, through Lightning's WandbLogger
    "FutureWarning",
    "DeprecationWarning",
)


def test_only_the_listed_messages_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert len(bnb.filters) == 1
    with caplog.at_level(logging.INFO):
        bnb.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "No module named 'kernels'")
        bnb.warning("a CPU kernel failed on this input")  # anything else from the same logger stays
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info(
            QUIET_LOG_MESSAGES["lightning.pytorch.utilities.rank_zero"][0] + ", try installing [litlogger]"
        )
    assert caplog.messages == ["a CPU kernel failed on this input"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()  # after simplefilter: the listed filters go in front again
        warnings.warn(
            "`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning, stacklevel=2
        )
        warnings.warn("`is_gradient_checkpointing` is deprecated", UserWarning, stacklevel=2)  # another category: kept
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=2)
    assert [str(w.message) for w in caught] == [
        "`is_gradient_checkpointing` is deprecated",
        "something else is deprecated",
    ]


def _console(script: str, args: list[str], tmp_path: Path) -> str:
    """Run an entry point as a user does; its whole console output (it must succeed)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-2000:]
    return console


@pytest.mark.slow
def test_training_evaluation_and_generation_print_no_third_party_noise(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs", {"USA": 16})
    common = ["model=tiny_random", "logger=wandb", "cultures=[USA]", f"paths.log_dir={tmp_path / 'logs'}"]
    args = [*common, "sft.max_steps=2", "sft.global_batch_size=4", "sft.micro_batch_size=2", f"sft.pairs_dir={pairs}"]
    console = _console("train.py", args, tmp_path)
    assert "train joint: no checkpoint yet: starting from step 0" in console  # the run's own lines stay
    assert "adapter (joint):" in console
    assert [n for n in NOISE if n in console] == [], console[-3000:]

    console = _console("evaluate.py", [*common, "eval.adapter=latest", "eval.limit=4"], tmp_path)
    assert "alignment results written to" in console
    assert [n for n in NOISE if n in console] == [], console[-3000:]

    answers = [*common, "stage=answers", "answers.setting=aware", "answers.input=wvs", "answers.limit=4"]
    console = _console("generate.py", [*answers, f"paths.work_dir={tmp_path / 'work'}"], tmp_path)
    assert "aware_USA.jsonl: 4 answers" in console
    assert [n for n in NOISE if n in console] == [], console[-3000:]
