"""Scoring answer files made elsewhere (eval.source=predictions): formats, {culture} templating, errors, relations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.evaluate.run import evaluate


def _write(path: Path, records: list[dict], jsonl: bool) -> Path:
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _cfg(make_cfg, path: str, cultures: str, *extra: str):
    return make_cfg(
        "evaluate",
        ["eval.source=predictions", f"eval.predictions.path='{path}'", f"cultures={cultures}", "logger=none", *extra],
    )


def test_templated_files_json_and_jsonl(make_cfg, wvs, tmp_path: Path) -> None:
    questions = wvs.eval_questions[:12]
    # USA: the majority answer as free text (JSON list) → 100; CHN: always the first option (JSONL)
    usa = [{"Q_id": q.id, "answer": f"I choose {wvs.majority_answer('USA', q.id)}.", "extra": 1} for q in questions]
    chn = [{"Q_id": q.id, "answer": q.numbers[0]} for q in questions]
    _write(tmp_path / "answers_USA.json", usa, jsonl=False)
    _write(tmp_path / "answers_CHN.json", chn, jsonl=True)
    cfg = _cfg(make_cfg, f"{tmp_path}/answers_{{culture}}.json", "[USA,CHN]", "eval.limit=12")
    summary = evaluate(cfg)
    result = json.loads(Path(summary["alignment"]).read_text())
    assert result["metric"] == "alignment"
    assert set(result["cultures"]) == {"USA", "CHN"}
    usa_row = result["cultures"]["USA"]
    assert usa_row["score"] == pytest.approx(100.0) and usa_row["valid"] == usa_row["total"] == 12
    assert set(usa_row) >= {"score", "valid", "total", "js_similarity", "topics"}
    # CHN by hand: only the questions CHN has survey answers for
    scored = [q for q in questions if wvs.majority_answer("CHN", q.id) is not None]
    dist = math.sqrt(sum((q.numbers[0] - wvs.majority_answer("CHN", q.id)) ** 2 for q in scored))
    worst = math.sqrt(sum((q.n_options - 1) ** 2 for q in scored))
    assert result["cultures"]["CHN"]["score"] == pytest.approx(100 * (1 - dist / worst))
    assert result["cultures"]["CHN"]["total"] == len(scored)
    assert result["average"] == pytest.approx((100 + result["cultures"]["CHN"]["score"]) / 2)
    assert result["setting"]["source"] == "predictions"


def test_one_file_scored_against_every_culture_and_relations(make_cfg, wvs, tmp_path: Path) -> None:
    questions = wvs.eval_questions[:20]
    records = [{"Q_id": q.id, "answer": str(wvs.majority_answer("USA", q.id))} for q in questions]
    path = _write(tmp_path / "usa.jsonl", records, jsonl=True)
    summary = evaluate(_cfg(make_cfg, str(path), "[USA,ETH]", "eval.limit=20", "eval.suite=relations"))
    assert summary["scores"]["USA"] == pytest.approx(100.0)
    assert summary["scores"]["ETH"] < 100.0
    matrix = summary["relations_matrix"]
    assert matrix[0] == matrix[1] == [pytest.approx(100.0), pytest.approx(summary["scores"]["ETH"])]
    assert Path(summary["relations"]["png"]).read_bytes()[:4] == b"\x89PNG"
    assert Path(summary["relations"]["csv"]).read_text().splitlines()[0] == "steered \\ scored,USA,ETH"


def test_nothing_valid_gives_a_null_row_not_a_crash(make_cfg, wvs, tmp_path: Path) -> None:
    records = [{"Q_id": q.id, "answer": "no idea"} for q in wvs.eval_questions[:5]]
    path = _write(tmp_path / "p.json", records, jsonl=False)
    result = json.loads(Path(evaluate(_cfg(make_cfg, str(path), "USA", "eval.limit=5"))["alignment"]).read_text())
    assert result["cultures"]["USA"]["score"] is None
    assert result["cultures"]["USA"]["valid"] == 0 and result["cultures"]["USA"]["invalid"] == 5
    assert result["average"] is None and result["unscored"] == ["USA"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"Q_id": "Q1", "answer": "1"}, {"Q_id": "Q999", "answer": "2"}], "item 1: unknown Q_id 'Q999'"),
        ([{"Q_id": "Q1", "answer": "1"}, {"Q_id": "Q1", "answer": "2"}], "item 1: duplicate Q_id 'Q1'"),
        ([{"Q_id": "Q1"}], "item 0: missing field 'answer'"),
    ],
)
def test_bad_records_are_one_line_errors(make_cfg, tmp_path: Path, records, message) -> None:
    path = _write(tmp_path / "bad.json", records, jsonl=False)
    with pytest.raises(CultureSPAError) as err:
        evaluate(_cfg(make_cfg, str(path), "USA"))
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_jsonl_error_names_the_line_and_missing_culture_file(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "bad_USA.jsonl", [{"Q_id": "Q2", "answer": 1}, {"Q_id": "Q2", "answer": 1}], jsonl=True)
    with pytest.raises(CultureSPAError, match=r"bad_USA.jsonl:2: duplicate Q_id 'Q2' \(first seen at .*:1\)"):
        evaluate(_cfg(make_cfg, f"{tmp_path}/bad_{{culture}}.jsonl", "USA"))
    with pytest.raises(CultureSPAError, match=r"file not found for CHN: .*bad_CHN.jsonl"):
        evaluate(_cfg(make_cfg, f"{tmp_path}/bad_{{culture}}.jsonl", "[USA,CHN]"))


def test_issue_spelling(make_cfg, wvs, tmp_path: Path) -> None:
    """`evaluate.py source=predictions predictions.path='DIR/answers_{culture}.json'`, as the issue writes it."""
    for code in ("USA", "CHN"):
        records = [
            {"Q_id": q.id, "answer": f"My answer: {wvs.majority_answer(code, q.id)}"}
            for q in wvs.eval_questions
            if wvs.majority_answer(code, q.id) is not None
        ]
        _write(tmp_path / f"answers_{code}.json", records, jsonl=False)
    template = f"{tmp_path}/answers_{{culture}}.json"
    cfg = make_cfg(
        "evaluate", ["source=predictions", f"predictions.path='{template}'", "cultures=[USA,CHN]", "logger=none"]
    )
    scores = evaluate(cfg)["scores"]
    assert scores == {"USA": pytest.approx(100.0), "CHN": pytest.approx(100.0)}


def test_results_logged_to_wandb_offline(make_cfg, wvs, tmp_path: Path) -> None:
    path = _write(tmp_path / "a.json", [{"Q_id": "Q1", "answer": wvs.majority_answer("USA", "Q1")}], jsonl=False)
    cfg = make_cfg(
        "evaluate",
        ["eval.source=predictions", f"eval.predictions.path='{path}'", "cultures=USA", "eval.suite=relations"],
    )
    evaluate(cfg)
    runs = list(Path(cfg.eval.output_dir).glob("wandb/offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    tables = {str(p.relative_to(media / "table")).rsplit("_", 2)[0] for p in media.glob("table/**/*.table.json")}
    assert tables == {"alignment/cultures", "alignment/topics", "alignment/questions", "relations/table"}
    assert list(media.glob("images/**/*.png"))  # the relations heatmap
