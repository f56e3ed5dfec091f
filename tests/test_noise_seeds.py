"""CRQPC's noise floor and kept pairs over seeds: figures from real pairs-stage outputs on hand-made answers, the
crossed seeds × questions interval in a simulation, mismatched runs named, and the seeds CLI's pairs table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_noise import FLOOR_ROWS, _cfg, _write

from culturespa.errors import CultureSPAError
from culturespa.evaluate.seeds import main as seeds_main
from culturespa.generate.run import generate
from culturespa.pairs import noise_seeds

# A second seed on the same questions: USA now answers like the first unaware sample everywhere but q2.
SEED2_ROWS = [
    ("q1", "T1", [1, 1], {"USA": [1], "CHN": [1]}),  # A = 0,   N = 0
    ("q2", "T1", [1, 2], {"USA": [1], "CHN": [2]}),  # A = 1/2, N = 1
    ("q3", "T2", [2, 2], {"USA": [2], "CHN": [2]}),  # A = 0,   N = 0
    ("q4", "T2", [1, 1], {"USA": [1], "CHN": [3]}),  # A = 0,   N = 0 (CHN: A = 1)
]


def _seed_run(make_cfg, root: Path, rows: list, criterion: str = "answer") -> Path:
    """A run folder whose comparison.json points at a real pairs stage's output on ``rows``."""
    _write(root / "answers", rows)
    generate(_cfg(make_cfg, root, "decoding=sample", f"data.criterion={criterion}", "data.bootstrap=200"))
    run = root / "run-folder"
    run.mkdir()
    rows_out = [{"culture": c, "base": 40.0, "culturespa": 41.0} for c in ("USA", "CHN")]
    comparison = {
        "prompt": "p1",
        "model": "m",
        "average": {"base": 40.0, "culturespa": 41.0},
        "cultures": rows_out,
        "files": {"answers": str(root / "answers"), "pairs": str(root / "pairs")},
    }
    (run / "comparison.json").write_text(json.dumps(comparison))
    return run


def _comparison(run: Path) -> dict:
    data = json.loads((run / "comparison.json").read_text())
    return data | {"_file": str(run / "comparison.json")}


def test_pooled_floor_signal_and_kept_counts(make_cfg, tmp_path: Path) -> None:
    runs = [_seed_run(make_cfg, tmp_path / "s1", FLOOR_ROWS), _seed_run(make_cfg, tmp_path / "s2", SEED2_ROWS)]
    summary = noise_seeds.summarise_pairs([_comparison(r) for r in runs], resamples=400)
    usa, chn = summary["cultures"]["USA"], summary["cultures"]["CHN"]
    assert usa["kept"]["values"] == [2.0, 0.0] and usa["kept"]["sd"] == pytest.approx(2**0.5)
    assert chn["kept"]["values"] == [0.0, 2.0]
    # pooled over both seeds' 4 questions: A = (2.5 + 0.5) / 8, N = (1 + 1) / 8
    assert (usa["aware_vs_unaware"], usa["unaware_vs_unaware"], usa["signal"]) == pytest.approx((0.375, 0.25, 0.125))
    # CHN: A = ((0 + .5 + 0 + 0) + (0 + .5 + 0 + 1)) / 8 = 2 / 8, N the same 2 / 8: no signal
    assert (chn["aware_vs_unaware"], chn["signal"]) == pytest.approx((0.25, 0.0))
    assert summary["average"]["signal"] == pytest.approx(0.0625)
    lo, hi = usa["signal_ci"]
    assert lo <= 0.125 <= hi and lo < hi
    assert summary["total_kept"]["values"] == [2.0, 2.0]
    # seed 2 kept nothing for USA: its share averages over seed 1 only (null keep rate 1/4 x 4 compared / 2 kept)
    assert usa["expected_noise_share"]["values"] == [0.5]
    assert summary["expected_noise_share"]["values"] == [0.5, 0.5]  # all cultures, weighted by kept pairs
    assert summary["interval"]["seeds"] == 2 and summary["interval"]["questions"] == 4
    table = noise_seeds.markdown(summary)
    assert "| USA | 1.0 ± 1.4 | 2, 0 | 37.5 | 25.0 | 12.5 [" in table and "criterion `answer`" in table
    # the same call gives the same interval (seeded)
    again = noise_seeds.summarise_pairs([_comparison(r) for r in runs], resamples=400)
    assert again["cultures"]["USA"]["signal_ci"] == usa["signal_ci"]


def test_crossed_interval_covers_a_known_signal() -> None:
    """A_q ~ Bernoulli(0.4), N_q ~ Bernoulli(0.3) independently for 3 seeds × 2 cultures × 60 questions: the 95 %
    interval of the average signal covers the true 0.1 at least at the nominal rate (resampling seeds on top of
    questions makes it conservative when seeds do not differ)."""
    rng = np.random.default_rng(7)
    covered, widths = 0, []
    for draw in range(120):
        rates = np.stack([rng.random((3, 2, 60)) < 0.4, rng.random((3, 2, 60)) < 0.3]).astype(float)
        found = noise_seeds.crossed_bootstrap(rates, resamples=300, level=0.95, seed=draw)
        lo, hi = found["average"]["signal_ci"]
        covered += lo <= 0.1 <= hi
        widths.append(hi - lo)
    assert covered / 120 >= 0.93
    assert 0.1 < float(np.mean(widths)) < 0.3  # not a vacuous interval (± 1 would also cover)


def test_missing_answers_fall_back_and_mixed_runs_are_named(make_cfg, tmp_path: Path) -> None:
    a = _seed_run(make_cfg, tmp_path / "a", FLOOR_ROWS)
    b = _seed_run(make_cfg, tmp_path / "b", SEED2_ROWS, criterion="none")
    with pytest.raises(CultureSPAError, match="b/pairs/stats.json: criterion 'none' differs"):
        noise_seeds.summarise_pairs([_comparison(a), _comparison(b)])
    for f in (tmp_path / "a" / "answers").glob("*.jsonl"):
        f.unlink()
    summary = noise_seeds.summarise_pairs([_comparison(a)])
    assert summary["interval"]["method"] is None and "answers file not found" in summary["interval"]["reason"]
    assert summary["cultures"]["USA"]["kept"]["values"] == [2.0]  # counts still come from stats.json
    assert "unavailable: " in noise_seeds.markdown(summary)
    broken = _comparison(a) | {"files": {}}
    with pytest.raises(CultureSPAError, match="no 'files.pairs' entry"):
        noise_seeds.load_stats(broken)


def test_seeds_cli_prints_the_pairs_table(make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_seed_run(make_cfg, tmp_path / "s1", FLOOR_ROWS), _seed_run(make_cfg, tmp_path / "s2", SEED2_ROWS)]
    summary = seeds_main([str(r) for r in runs] + ["--samples", "200", "--markdown", str(tmp_path / "t.md")])
    assert summary["pairs"]["cultures"]["USA"]["signal"] == pytest.approx(0.125)
    out = capsys.readouterr().out
    assert "CRQPC pairs, criterion `answer`" in out and "| **all** | 2.0 ± 0.0 | 2, 2 |" in out
    assert "CRQPC pairs" in (tmp_path / "t.md").read_text()
    assert "pairs" not in seeds_main([str(r) for r in runs] + ["--samples", "200", "--no-pairs"])


def test_cli_on_pipeline_pairs_folders(make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before any training: pairs folders of the pipeline layout find their answers through ``_SUCCESS.json``."""
    store = tmp_path / "outputs" / "pipeline"
    folders = []
    for i, rows in enumerate((FLOOR_ROWS, SEED2_ROWS)):
        _seed_run(make_cfg, tmp_path / f"s{i}", rows)
        shutil.copytree(tmp_path / f"s{i}" / "answers", store / "answers" / f"a{i}")
        pairs = shutil.copytree(tmp_path / f"s{i}" / "pairs", store / "pairs" / f"p{i}")
        (pairs / "_SUCCESS.json").write_text(json.dumps({"stage": "pairs", "upstream": [f"a{i}"]}))
        folders.append(str(pairs))
    summary = noise_seeds.main([*folders, "--samples", "200", "--json", str(tmp_path / "n.json")])
    assert summary["cultures"]["USA"]["signal"] == pytest.approx(0.125) and summary["interval"]["seeds"] == 2
    assert "| USA | 1.0 ± 1.4 | 2, 0 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "n.json").read_text())["total_kept"]["values"] == [2.0, 2.0]
    with pytest.raises(CultureSPAError, match="neither a run folder"):
        noise_seeds.run_files(tmp_path)
    with pytest.raises(CultureSPAError, match="resamples: 0 must be >= 1"):
        noise_seeds.main([*folders, "--samples", "0"])


def test_report_defaults_follow_eval_bootstrap() -> None:
    """The generic report options default to eval.bootstrap's settings (noise_seeds relies on these defaults)."""
    import argparse

    from culturespa.evaluate.uncertainty import BootstrapSettings
    from culturespa.utils.reports import add_report_args

    parser = argparse.ArgumentParser()
    add_report_args(parser)
    args = parser.parse_args([])
    defaults = BootstrapSettings()
    assert (args.samples, args.confidence, args.seed) == (defaults.samples, defaults.confidence, defaults.seed)
