"""Stage pairs (CRQPC) on hand-made answer files: each criterion with exact counts, and the input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.pairs.rule import js_distance


def _question(q_id: str, topic: str) -> dict:
    return {
        "id": q_id,
        "text": f"{q_id}?",
        "options": ["a", "b", "c"],
        "first_option": 1,
        "topic": topic,
        "source": "generated",
        "meta": {},
    }


def _answer(q_id: str, topic: str, culture: str | None, setting: str, answer: int | None, dist: list[float] | None):
    return {
        "id": q_id,
        "culture": culture,
        "setting": setting,
        "run": 0,
        "raw": str(answer),
        "answer": answer,
        "valid": answer is not None,
        "distribution": None if dist is None else {str(i + 1): p for i, p in enumerate(dist)},
        "question": _question(q_id, topic),
    }


# (question, topic, unaware answer, unaware dist, USA aware answer, USA dist)
ROWS = [
    ("q1", "T1", 1, [0.8, 0.1, 0.1], 1, [0.7, 0.2, 0.1]),  # same, tiny JS
    ("q2", "T1", 1, [0.5, 0.45, 0.05], 2, [0.45, 0.5, 0.05]),  # differ, but a near tie: tiny JS
    ("q3", "T1", 1, [0.9, 0.05, 0.05], 3, [0.05, 0.05, 0.9]),  # differ, large JS
    ("q4", "T2", None, [0.4, 0.3, 0.3], 2, [0.1, 0.8, 0.1]),  # unaware invalid
    ("q5", "T2", 2, [0.1, 0.8, 0.1], 2, [0.05, 0.15, 0.8]),  # same answer... (dist moved a lot)
    ("q6", "T2", 3, [0.1, 0.1, 0.8], None, [0.3, 0.3, 0.4]),  # aware invalid
]


def _write(folder: Path, system: str = "aware", with_dist: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    unaware = [_answer(q, t, None, "unaware", ua, ud if with_dist else None) for q, t, ua, ud, _, _ in ROWS]
    usa = [_answer(q, t, "USA", system, aa, ad if with_dist else None) for q, t, _, _, aa, ad in ROWS]
    # CHN answers like the unaware model everywhere
    chn = [_answer(q, t, "CHN", system, ua, ud if with_dist else None) for q, t, ua, ud, _, _ in ROWS]
    for name, records in (("unaware", unaware), (f"{system}_USA", usa), (f"{system}_CHN", chn)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _cfg(make_cfg, tmp_path: Path, *extra: str, logger: str = "csv"):
    return make_cfg(
        "generate",
        [
            "stage=pairs",
            "cultures=[USA,CHN]",
            f"answers.output_dir={tmp_path / 'answers'}",
            f"sft.pairs_dir={tmp_path / 'pairs'}",
            f"logger={logger}",
            *extra,
        ],
    )


def _pairs(tmp_path: Path, culture: str) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "pairs" / f"{culture}.jsonl").read_text().splitlines()]


def test_answer_criterion(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers")
    summary = generate(_cfg(make_cfg, tmp_path, "data.criterion=answer", logger="wandb"))
    assert summary["kept"] == {"USA": 2, "CHN": 0}
    stats = json.loads((tmp_path / "pairs" / "stats.json").read_text())
    assert stats["criterion"] == "answer" and stats["system"] == "aware"
    usa = stats["cultures"]["USA"]
    assert {k: usa[k] for k in ("valid", "same", "differ", "kept")} == {"valid": 4, "same": 2, "differ": 2, "kept": 2}
    assert usa["differ_rate"] == 0.5
    topics = {t: {k: v for k, v in s.items() if k != "noise"} for t, s in usa["topics"].items()}
    assert topics["T1"] == {"valid": 3, "same": 1, "differ": 2, "kept": 2, "differ_rate": 2 / 3}
    assert topics["T2"] == {"valid": 1, "same": 1, "differ": 0, "kept": 0, "differ_rate": 0.0}
    assert stats["cultures"]["CHN"]["differ_rate"] == 0.0 and stats["cultures"]["CHN"]["valid"] == 5
    pairs = _pairs(tmp_path, "USA")
    assert [(p["id"], p["answer"], p["unaware_answer"]) for p in pairs] == [("q2", 2, 1), ("q3", 3, 1)]
    assert pairs[0]["culture"] == "USA" and pairs[0]["topic"] == "T1" and pairs[0]["question"]["id"] == "q2"
    assert pairs[0]["js"] == pytest.approx(
        js_distance({"1": 0.45, "2": 0.5, "3": 0.05}, {"1": 0.5, "2": 0.45, "3": 0.05}, [1, 2, 3])
    )
    assert _pairs(tmp_path, "CHN") == []
    logged = {
        p.name.split("_")[0] for p in (tmp_path / "run" / "wandb").glob("offline-run-*/files/media/table/pairs/*")
    }
    assert logged == {"stats", "differ", "samples", "noise"}  # stats, differ-rate bar chart, samples, noise floor


def test_distribution_criterion(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", system="cct")
    generate(_cfg(make_cfg, tmp_path, "data.criterion=distribution", "data.js_threshold=0.3", "data.system=cct"))
    stats = json.loads((tmp_path / "pairs" / "stats.json").read_text())
    assert stats["system"] == "cct" and stats["js_threshold"] == 0.3
    # q3 and q5 moved far (JS >= 0.3); q2 flipped between near-tied options and is not kept
    assert [p["id"] for p in _pairs(tmp_path, "USA")] == ["q3", "q5"]
    assert stats["cultures"]["USA"]["kept"] == 2 and stats["cultures"]["USA"]["differ"] == 2
    assert all(p["js"] >= 0.3 for p in _pairs(tmp_path, "USA"))
    assert _pairs(tmp_path, "CHN") == []


def test_none_criterion_keeps_every_valid_aware_answer(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", with_dist=False)
    generate(_cfg(make_cfg, tmp_path, "data.criterion=none"))
    usa = _pairs(tmp_path, "USA")
    assert [p["id"] for p in usa] == ["q1", "q2", "q3", "q4", "q5"]
    assert usa[3]["unaware_answer"] is None and usa[0]["js"] is None
    assert [p["id"] for p in _pairs(tmp_path, "CHN")] == ["q1", "q2", "q3", "q5", "q6"]


def test_js_distance_base2() -> None:
    assert js_distance({"1": 1.0}, {"2": 1.0}, [1, 2]) == pytest.approx(1.0)
    assert js_distance({"1": 0.5, "2": 0.5}, {"1": 0.5, "2": 0.5}, [1, 2]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "aware_CHN.jsonl").unlink(), "aware_CHN.jsonl: answers file not found"),
        (lambda d: (d / "unaware.jsonl").write_text(""), "unaware.jsonl: answers file is empty"),
        (
            lambda d: (d / "aware_USA.jsonl").write_text('{"id": "q1", "valid": tr\n'),
            "aware_USA.jsonl:1: malformed JSON",
        ),
        (lambda d: (d / "aware_USA.jsonl").write_text('{"id": "q1", "valid": true}\n'), "without 'answer'"),
    ],
)
def test_bad_answers_files_fail_before_writing(make_cfg, tmp_path: Path, damage, message: str) -> None:
    _write(tmp_path / "answers")
    damage(tmp_path / "answers")
    with pytest.raises(CultureSPAError) as err:
        generate(_cfg(make_cfg, tmp_path, "data.criterion=answer"))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pairs").exists()


def test_distribution_criterion_needs_logprob_answers(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", with_dist=False)
    with pytest.raises(CultureSPAError, match="decoding=logprob"):
        generate(_cfg(make_cfg, tmp_path, "data.criterion=distribution"))
