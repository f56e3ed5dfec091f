"""Comparisons across alignment.json files and data-quantity curves (PNG + CSV), and their CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.evaluate.analyses import compare, main, quantity_curve, relations_outputs


def _result(path: Path, scores: dict[str, float | None]) -> Path:
    valid = [s for s in scores.values() if s is not None]
    data = {
        "metric": "alignment",
        "cultures": {
            c: {"score": s, "valid": 1, "total": 1, "js_similarity": 0.5, "topics": {}} for c, s in scores.items()
        },
        "average": sum(valid) / len(valid),
        "js_similarity_average": 0.5,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _rows(path: Path) -> list[list[str]]:
    with path.open() as handle:
        return list(csv.reader(handle))


def test_compare_cli_writes_png_and_csv(tmp_path: Path) -> None:
    a = _result(tmp_path / "joint" / "alignment.json", {"USA": 60.0, "CHN": 70.0})
    b = _result(tmp_path / "specific" / "alignment.json", {"USA": 64.0, "CHN": None})
    out = tmp_path / "plots" / "joint_vs_specific.png"
    code = main(["compare", str(a), str(b), "--labels", "joint", "specific", "--out", str(out), "--wandb", "disabled"])
    assert code == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    rows = _rows(out.with_suffix(".csv"))
    assert rows[0] == ["culture", "joint", "specific"]
    assert rows[1:] == [["USA", "60.0", "64.0"], ["CHN", "70.0", ""], ["average", "65.0", "64.0"]]


def test_compare_errors(tmp_path: Path, capsys) -> None:
    a = _result(tmp_path / "a.json", {"USA": 50.0})
    with pytest.raises(CultureSPAError, match="2 labels for 1 files"):
        compare([a], ["x", "y"], tmp_path / "o.png")
    (tmp_path / "bad.json").write_text('{"metric": "general"}')
    assert main(["compare", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o.png"), "--wandb", "disabled"]) == 1
    assert "not an alignment.json" in capsys.readouterr().err


def test_quantity_curve_sorted_by_x(tmp_path: Path) -> None:
    files = [_result(tmp_path / f"f{x}.json", {"USA": s, "CHN": s + 10}) for x, s in ((1.0, 70.0), (0.25, 50.0))]
    outputs = quantity_curve(files, [1.0, 0.25], tmp_path / "q.png", cultures=["USA"])
    assert outputs["png"].read_bytes()[:4] == b"\x89PNG"
    assert _rows(outputs["csv"]) == [["x", "average", "USA"], ["0.25", "55.0", "50.0"], ["1.0", "75.0", "70.0"]]
    with pytest.raises(CultureSPAError, match="1 x values for 2 files"):
        quantity_curve(files, [1.0], tmp_path / "q.png")


def test_relations_outputs(tmp_path: Path) -> None:
    outputs = relations_outputs([[100.0, 40.0], [None, 90.0]], ["USA", "CHN"], tmp_path)
    assert _rows(outputs["csv"]) == [["steered \\ scored", "USA", "CHN"], ["USA", "100.0", "40.0"], ["CHN", "", "90.0"]]
    assert outputs["png"].stat().st_size > 1000
