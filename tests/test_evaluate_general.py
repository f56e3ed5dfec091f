"""eval.suite=general: lm-evaluation-harness on a local multiple-choice task, base vs adapter, without the network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from culturespa.evaluate.run import evaluate

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tests" / "fixtures" / "lm_eval_tasks"
LOCAL = ("127.0.0.1", "localhost", "::1")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection to a non-local address fails the test (W&B's own service talks over a local socket)."""
    original = socket.socket.connect

    def guarded(self, address, *args, **kwargs):
        host = address if isinstance(address, (str, bytes)) else address[0]
        if isinstance(host, (str, bytes)) and (isinstance(address, (str, bytes)) or host in LOCAL):
            return original(self, address, *args, **kwargs)
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _cfg(make_cfg, *overrides: str):
    return make_cfg(
        "evaluate",
        [
            "model=tiny_random",
            "cultures=USA",
            "eval.suite=general",
            "eval.general.tasks=[culturespa_tiny_mc]",
            f"eval.general.include_path={TASKS}",
            "eval.general.limit=null",
            "eval.general.batch_size=8",
            *overrides,
        ],
    )


@pytest.mark.slow  # imports lm-eval and runs it twice (~15 s); still part of `make test`
def test_general_suite_base_and_adapter_offline(make_cfg, tmp_path: Path, monkeypatch, no_network) -> None:
    from test_evaluate_model import make_adapter  # tests/ is on sys.path (pytest's default import mode)

    monkeypatch.chdir(REPO)  # the fixture task's data_files path is relative to the repository root
    adapter = make_adapter(tmp_path / "adapter", seed=1)
    cfg = _cfg(make_cfg, f"eval.adapter={adapter}", "logger=wandb")
    summary = evaluate(cfg)
    result = json.loads(Path(summary["general"]).read_text())
    assert set(result["scores"]) == {"base", "adapter"}
    base = result["scores"]["base"]["culturespa_tiny_mc"]
    assert set(base) == {"acc", "acc_norm"} and 0.0 <= base["acc"] <= 1.0
    rows = {row["metric"]: row for row in result["rows"]}
    assert rows["acc"]["adapter Δ"] == pytest.approx(rows["acc"]["adapter"] - rows["acc"]["base"])
    assert result["adapter"] == str(adapter) and result["dtype"] == "float32"
    assert list(Path(cfg.eval.output_dir).glob("wandb/offline-run-*"))  # the before/after table went to W&B
