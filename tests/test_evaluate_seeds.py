"""The over-seeds summary of pipeline comparisons: arithmetic, checks on mismatched runs, one-line errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.evaluate.seeds import load_comparison, main, summarise


def _run(folder: Path, base: list[float], tuned: list[float], cultures: tuple[str, ...] = ("USA", "CHN")) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"culture": c, "base": b, "culturespa": t, "base_valid": 200, "culturespa_valid": 250, "total": 250}
        for c, b, t in zip(cultures, base, tuned, strict=True)
    ]
    average = {"base": statistics.fmean(base), "culturespa": statistics.fmean(tuned)}
    data = {"prompt": "p1", "model": "m", "average": average, "cultures": rows}
    (folder / "comparison.json").write_text(json.dumps(data))
    return folder


def test_mean_sd_and_improved_counts(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path / "s1", [40.0, 30.0], [41.0, 29.0]),
        _run(tmp_path / "s2", [42.0, 31.0], [42.5, 33.0]),
        _run(tmp_path / "s3", [41.0, 32.0], [40.0, 34.0]),
    ]
    summary = summarise([load_comparison(r) for r in runs])
    usa = summary["cultures"]["USA"]
    assert usa["base"]["mean"] == pytest.approx(41.0) and usa["base"]["sd"] == pytest.approx(1.0)
    assert usa["delta"]["values"] == pytest.approx([1.0, 0.5, -1.0]) and usa["improved"] == 2
    assert usa["base_valid_rate"] == pytest.approx(0.8) and usa["culturespa_valid_rate"] == pytest.approx(1.0)
    chn = summary["cultures"]["CHN"]
    assert chn["delta"]["mean"] == pytest.approx(1.0) and chn["delta"]["sd"] == pytest.approx(
        statistics.stdev([-1, 2, 2])
    )
    assert summary["average"]["delta"]["values"] == pytest.approx([0.0, 1.25, 0.5])
    assert summary["average"]["improved"] == 2


def test_cli_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path / f"s{i}", [40.0 + i, 30.0], [41.0, 31.0 + i]) for i in range(2)]
    main([str(r) for r in runs] + ["--markdown", str(tmp_path / "t.md"), "--json", str(tmp_path / "s.json")])
    table = (tmp_path / "t.md").read_text()
    assert "| USA | 40.50 ± 0.71 | 41.00 ± 0.00 | +0.50 ± 0.71 | 1/2 | +1.00, +0.00 |" in table
    assert "**average**" in table and "m, prompt p1, 2 runs" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["average"]["improved"] == 2


def test_mismatched_or_broken_runs_are_named(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", [40.0, 30.0], [41.0, 31.0])
    b = _run(tmp_path / "b", [40.0, 30.0], [41.0, 31.0], cultures=("USA", "GBR"))
    with pytest.raises(CultureSPAError, match=r"b/comparison.json: cultures \['USA', 'GBR'\] differ"):
        summarise([load_comparison(a), load_comparison(b)])
    with pytest.raises(CultureSPAError, match="no such comparison file"):
        load_comparison(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "comparison.json").write_text('{"prompt": "p1", "model": "m", "average": {}}')
    with pytest.raises(CultureSPAError, match="field 'cultures' is missing"):
        load_comparison(tmp_path / "bad")
