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
    # No per-question answers behind these files: a t interval over the two seeds (t(1) = 12.71), said so.
    assert "| USA | 40.50 ± 0.71 | 41.00 ± 0.00 | +0.50 ± 0.71 | [-5.85, +6.85] | 0.500 | 1/2 | +1.00, +0.00 |" in table
    assert "t interval over seeds" in table and "no 'files' entry" in table
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


def _answered_run(folder: Path, wvs, base: dict, tuned: dict, n: int = 30) -> Path:  # noqa: ANN001
    """A run folder as the pipeline leaves it: eval-base/ and eval-culturespa/ answer files plus comparison.json
    (scores computed from those answers); ``base``/``tuned`` map culture → function(question) → answer."""
    from culturespa.evaluate.alignment_score import score_all

    questions = wvs.eval_questions[:n]
    files, scored = {}, {}
    for name, answer in (("eval-base", base), ("eval-culturespa", tuned)):
        answers = {}
        for code, pick in answer.items():
            records = [{"id": q.id, "run": 0, "answer": pick(q), "valid": True} for q in questions]
            (folder / name / "answers").mkdir(parents=True, exist_ok=True)
            (folder / name / "answers" / f"p1_{code}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            answers[code] = records
        files[name] = str(folder / name)
        scored[name] = score_all(answers, questions, wvs, list(answer))
    rows = [
        {
            "culture": c,
            "base": scored["eval-base"]["cultures"][c]["score"],
            "culturespa": scored["eval-culturespa"]["cultures"][c]["score"],
        }
        for c in base
    ]
    average = {"base": scored["eval-base"]["average"], "culturespa": scored["eval-culturespa"]["average"]}
    data = {"prompt": "p1", "model": "m", "average": average, "cultures": rows, "files": files}
    (folder / "comparison.json").write_text(json.dumps(data))
    return folder


def test_intervals_resample_questions_from_the_stored_answers(tmp_path: Path, wvs) -> None:  # noqa: ANN001
    first = {"USA": lambda q: q.numbers[0], "CHN": lambda q: q.numbers[0]}
    gold = {c: (lambda q, c=c: wvs.majority_answer(c, q.id) or q.numbers[0]) for c in ("USA", "CHN")}
    # Two seeds with identical answers: nothing varies between seeds, so any width comes from resampling questions.
    runs = [_answered_run(tmp_path / f"s{i}", wvs, first, gold) for i in range(2)]
    summary = main([str(r) for r in runs] + ["--samples", "500", "--json", str(tmp_path / "s.json")])
    assert summary["uncertainty"]["method"] == "percentile" and summary["uncertainty"]["questions"] == 30
    avg = summary["average"]
    assert avg["delta"]["sd"] == 0.0  # the old summary had nothing to say here
    assert 0 < avg["delta"]["lo"] < avg["delta"]["mean"] < avg["delta"]["hi"]
    assert avg["p"] < 0.01  # the survey majority beats "always option 1" on 30 questions
    assert avg["base"]["lo"] < avg["base"]["mean"] < avg["base"]["hi"]
    usa = summary["cultures"]["USA"]
    assert usa["delta"]["lo"] < usa["delta"]["mean"] < usa["delta"]["hi"]
    assert json.loads((tmp_path / "s.json").read_text())["uncertainty"]["resampled"].startswith("seeds and questions")

    # The same answers for both systems: no difference, and the test says so.
    same = [_answered_run(tmp_path / f"same{i}", wvs, first, first) for i in range(2)]
    flat = main([str(r) for r in same] + ["--samples", "200"])
    assert flat["average"]["delta"]["lo"] == flat["average"]["delta"]["hi"] == 0.0 and flat["average"]["p"] == 1.0


def test_missing_answers_fall_back_to_a_t_interval_and_say_why(tmp_path: Path, wvs) -> None:  # noqa: ANN001
    first = {"USA": lambda q: q.numbers[0]}
    last = {"USA": lambda q: q.numbers[-1]}
    runs = [_answered_run(tmp_path / f"s{i}", wvs, first, last if i else first) for i in range(2)]
    (runs[1] / "eval-culturespa" / "answers" / "p1_USA.jsonl").unlink()
    summary = main([str(r) for r in runs])
    about = summary["uncertainty"]
    assert about["method"].startswith("t interval over seeds") and "p1_USA.jsonl" in about["fallback_reason"]
    assert summary["average"]["base"]["lo"] is None and summary["average"]["delta"]["lo"] is not None
