"""CRQPC's noise floor and the noise-robust criteria: figures on hand-made answer files, the exact test against values
computed by hand, the calibrated distribution threshold on synthetic data, and tiny_random end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import fisher_exact
from test_generate_pairs import _question  # the same hand-made question records

from culturespa.answers.answers_settings import AnswersStageSettings
from culturespa.config import validate_config
from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.infer.engine import Engine
from culturespa.pairs import criteria
from culturespa.pairs.rule import Rule, null_rates
from culturespa.stages.checks import smallest_p
from culturespa.stages.identity import stage_hash


def _records(q_id: str, topic: str, culture: str | None, setting: str, answers: list[int | None]) -> list[dict]:
    return [
        {
            "id": q_id,
            "culture": culture,
            "setting": setting,
            "run": run,
            "raw": str(answer),
            "answer": answer,
            "valid": answer is not None,
            "distribution": None,
            "question": _question(q_id, topic),
        }
        for run, answer in enumerate(answers)
    ]


def _write(folder: Path, rows: list[tuple[str, str, list, dict[str, list]]]) -> None:
    """rows: (question, topic, unaware runs, {culture: aware runs}); files are run-major like the answers stage's."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[dict]] = {"unaware": []}
    for q, t, unaware, aware in rows:
        files["unaware"] += _records(q, t, None, "unaware", unaware)
        for culture, answers in aware.items():
            files.setdefault(f"aware_{culture}", []).extend(_records(q, t, culture, "aware", answers))
    for name, records in files.items():
        records.sort(key=lambda r: r["run"])
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _cfg(make_cfg, tmp_path: Path, *extra: str, cultures: str = "[USA,CHN]"):
    return make_cfg(
        "generate",
        [
            "stage=pairs",
            f"cultures={cultures}",
            f"answers.output_dir={tmp_path / 'answers'}",
            f"sft.pairs_dir={tmp_path / 'pairs'}",
            "logger=csv",
            *extra,
        ],
    )


def _stats(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "pairs" / "stats.json").read_text())


def _pairs(tmp_path: Path, culture: str) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "pairs" / f"{culture}.jsonl").read_text().splitlines()]


# k = 1, one noise replicate: unaware runs (u0, u1), aware run a0; CHN answers like u0.
FLOOR_ROWS = [
    ("q1", "T1", [1, 1], {"USA": [1], "CHN": [1]}),  # A = 0,   N = 0
    ("q2", "T1", [1, 2], {"USA": [1], "CHN": [1]}),  # A = 1/2, N = 1   (the model disagrees with itself)
    ("q3", "T2", [2, 2], {"USA": [3], "CHN": [2]}),  # A = 1,   N = 0
    ("q4", "T2", [1, 1], {"USA": [2], "CHN": [1]}),  # A = 1,   N = 0
]


def test_noise_floor_figures_on_known_disagreement(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", FLOOR_ROWS)
    args = ["decoding=sample", "data.criterion=answer", "data.bootstrap=500"]
    summary = generate(_cfg(make_cfg, tmp_path, *args, "logger=wandb"))
    assert summary["kept"] == {"USA": 2, "CHN": 0}
    media = tmp_path / "run" / "wandb"
    (table,) = media.glob("offline-run-*/files/media/table/pairs/noise_[0-9]*.table.json")
    logged = json.loads(table.read_text())
    row = dict(zip(logged["columns"], logged["data"][0], strict=True))
    assert row["culture"] == "USA" and row["signal"] == pytest.approx(0.375) and row["kept"] == 2
    (topics,) = media.glob("offline-run-*/files/media/table/pairs/noise_topics_*.table.json")
    assert [r[0] for r in json.loads(topics.read_text())["data"]] == ["USA/T1", "USA/T2", "CHN/T1", "CHN/T2"]
    stats = _stats(tmp_path)
    floor = stats["noise_floor"]
    assert floor["status"].startswith("measured") and floor["unaware_samples"] == 2 and floor["replicates"] == 1
    assert floor["null_keep_rate"] == 0.25  # u1 != u0 on q2 only: the paper's rule keeps 1 in 4 on pure noise
    usa = stats["cultures"]["USA"]["noise"]
    assert usa["questions"] == 4
    assert usa["aware_vs_unaware"] == pytest.approx(2.5 / 4)
    assert usa["unaware_vs_unaware"] == pytest.approx(0.25)
    assert usa["signal"] == pytest.approx(0.375)
    assert usa["signal_ci"][0] <= 0.375 <= usa["signal_ci"][1] and usa["signal_ci"][0] < usa["signal_ci"][1]
    assert usa["expected_noise_share"] == pytest.approx(0.25 * 4 / 2)  # 1 of the 2 kept pairs is expected noise
    t1, t2 = (stats["cultures"]["USA"]["topics"][t]["noise"] for t in ("T1", "T2"))
    assert (t1["aware_vs_unaware"], t1["unaware_vs_unaware"], t1["signal"]) == pytest.approx((0.25, 0.5, -0.25))
    assert t1["expected_noise_share"] is None  # nothing kept in T1
    assert (t2["signal"], t2["signal_ci"], t2["null_keep_rate"], t2["expected_noise_share"]) == (1.0, [1.0, 1.0], 0, 0)
    chn = stats["cultures"]["CHN"]["noise"]
    assert (chn["aware_vs_unaware"], chn["unaware_vs_unaware"]) == pytest.approx((0.125, 0.25))
    assert chn["expected_noise_share"] is None
    # seeded: the same command gives the same interval
    generate(_cfg(make_cfg, tmp_path, *args))
    assert _stats(tmp_path)["cultures"]["USA"]["noise"]["signal_ci"] == usa["signal_ci"]


def test_deterministic_decoding_reports_no_floor(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", [(q, t, u[:1], a) for q, t, u, a in FLOOR_ROWS])
    generate(_cfg(make_cfg, tmp_path, "decoding=greedy"))
    stats = _stats(tmp_path)
    assert stats["noise_floor"]["status"] == "none (deterministic decoding)"
    usa = stats["cultures"]["USA"]["noise"]
    assert usa["unaware_vs_unaware"] is None and usa["expected_noise_share"] is None
    assert usa["floor"] == "none (deterministic decoding)" and usa["signal"] == pytest.approx(0.5)
    # the answers stage's sidecar, not the pairs command line, says how the answers were collected
    for name in ("unaware", "aware_USA", "aware_CHN"):
        (tmp_path / "answers" / f"{name}.jsonl.meta.json").write_text('{"complete": true, "decoding": "sample"}')
    generate(_cfg(make_cfg, tmp_path, "decoding=greedy"))
    assert _stats(tmp_path)["noise_floor"]["status"].startswith("not measured")


def test_exact_test_against_hand_computed_values() -> None:
    # 4 x option 2 vs 4 x option 1: two tables of probability 1 / C(8, 4) are this extreme
    assert criteria.exact_test({2: 4}, {1: 4}) == pytest.approx(2 / 70)
    # 2 x 3 table, column totals (4, 4, 2), C(10, 5) = 252 tables weighted C(4,x1) C(4,x2) C(2,x3); the observed
    # (0, 4, 1) has weight 2, and only (4, 0, 1) is as improbable
    assert criteria.exact_test({2: 4, 3: 1}, {1: 4, 3: 1}) == pytest.approx(4 / 252)
    # [[3, 1], [0, 4]]: weights C(3, x) C(5, 4 - x) = 5, 30, 30, 5 over 70 for x = 0..3; observed 5 -> 10 / 70
    assert criteria.exact_test({1: 3, 2: 1}, {2: 4}) == pytest.approx(10 / 70)
    assert criteria.exact_test({1: 3, 2: 1}, {2: 4}) == pytest.approx(fisher_exact([[3, 1], [0, 4]]).pvalue)
    # weights 6, 60, 120, 60, 6 over 252 (columns 6, 4; row 5); observed x1 = 2 has weight 60
    assert criteria.exact_test({2: 3, 1: 2}, {1: 4, 2: 1}) == pytest.approx(132 / 252)
    assert criteria.exact_test({1: 3}, {1: 5}) == 1.0 and criteria.exact_test({}, {1: 2}) == 1.0
    assert [smallest_p(k) for k in (3, 4, 5)] == pytest.approx([0.1, 2 / 70, 2 / 252])
    assert criteria.keep_majority({2: 5}, {1: 5}, 0.05) == (True, pytest.approx(2 / 252))
    assert criteria.keep_majority({2: 5}, {1: 5}, 0.005)[0] is False
    assert criteria.keep_majority({1: 3, 2: 2}, {1: 2, 2: 3}, 1.0)[0] is True  # majorities differ, p <= 1
    assert criteria.majority({1: 3, 2: 3}, {1: 6}) == 2  # a tie goes to the option that gained most
    assert criteria.keep_majority({1: 3, 2: 2}, {1: 4, 2: 1}, 1.0)[0] is False  # same majority: never kept


MAJORITY_ROWS = [
    # question, topic, unaware runs (replicate 0 then replicate 1), aware runs (k = 5)
    ("q1", "T1", [1, 1, 1, 1, 1] + [1, 1, 1, 1, 2], {"USA": [2, 2, 2, 2, 2]}),  # p = 2/252: kept
    ("q2", "T1", [1, 1, 1, 1, 2] * 2, {"USA": [2, 2, 2, 1, 1]}),  # majorities differ, p = 132/252: not kept
    ("q3", "T2", [1] * 10, {"USA": [1] * 5}),  # no shift
    ("q4", "T2", [1] * 10, {"USA": [3, 3, 3, 3, None]}),  # one invalid sample; p = 1/126: kept
]


def test_majority_criterion_end_to_end_on_files(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", MAJORITY_ROWS)
    args = ["decoding=sample", "data.criterion=majority", "data.samples=5", "data.noise_replicates=1"]
    summary = generate(_cfg(make_cfg, tmp_path, *args, cultures="[USA]"))
    assert summary["kept"] == {"USA": 2}
    pairs = _pairs(tmp_path, "USA")
    assert [(p["id"], p["answer"], p["unaware_answer"]) for p in pairs] == [("q1", 2, 1), ("q4", 3, 1)]
    assert [p["p_value"] for p in pairs] == pytest.approx([2 / 252, 1 / 126])
    assert pairs[1]["aware_counts"] == {"3": 4} and pairs[1]["unaware_counts"] == {"1": 5}
    stats = _stats(tmp_path)
    assert stats["criterion_settings"]["alpha"] == 0.05 and "Freeman-Halton" in stats["rule"]
    assert stats["noise_floor"]["null_keep_rate"] == 0.0  # replicate 1 vs 0 is never kept
    assert stats["cultures"]["USA"]["noise"]["expected_noise_share"] == 0.0
    # the paper's rule on the same files keeps q2 too (sample 0 differs), with half of them expected to be noise
    generate(_cfg(make_cfg, tmp_path, *args[:1], "data.samples=5", "data.criterion=answer", cultures="[USA]"))
    assert [p["id"] for p in _pairs(tmp_path, "USA")] == ["q1", "q2", "q4"]


def test_majority_config_errors(make_cfg, tmp_path: Path) -> None:
    _write(tmp_path / "answers", MAJORITY_ROWS)
    with pytest.raises(CultureSPAError, match=r"data.samples=3 can never reach data.alpha=0.05 .*data.samples>=4"):
        generate(_cfg(make_cfg, tmp_path, "decoding=sample", "data.criterion=majority", "data.samples=3"))
    with pytest.raises(CultureSPAError, match="needs decoding=sample"):
        generate(_cfg(make_cfg, tmp_path, "decoding=logprob", "data.criterion=majority", "data.samples=5"))
    with pytest.raises(CultureSPAError, match="data.noise_replicates>=1"):
        generate(_cfg(make_cfg, tmp_path, "decoding=sample", "data.criterion=distribution", "data.noise_replicates=0"))
    with pytest.raises(CultureSPAError, match=r"aware_USA.jsonl: holds 5 sample\(s\).*data.samples=6"):
        generate(
            _cfg(make_cfg, tmp_path, "decoding=sample", "data.criterion=majority", "data.samples=6", cultures="[USA]")
        )
    assert not (tmp_path / "pairs").exists()


def test_calibrated_distribution_threshold_on_synthetic_answers() -> None:
    """Unaware replicates and a same-distribution 'aware' setting drawn from one per-question option distribution:
    the threshold is the null quantile, pure noise is kept at most ~5 % of the time, a real shift almost always."""
    rng = np.random.default_rng(0)
    k, replicates, n = 5, 2, 400
    probs = rng.dirichlet([0.7, 0.7, 0.7], size=n)
    draw = lambda p, m: [int(x) + 1 for x in rng.choice(3, size=m, p=p)]  # noqa: E731
    unaware = {f"q{i}": draw(p, k * (1 + replicates)) for i, p in enumerate(probs)}
    questions = {q: _question(q, "T1" if i % 2 else "T2") for i, q in enumerate(unaware)}
    rule = Rule("distribution", k, 0.05, 0.1, sampled=True)
    rule.calibrate(unaware, questions, replicates, 0.95)
    null = [
        criteria.count_js(criteria.counts(runs[r * k : (r + 1) * k]), criteria.counts(runs[:k]), [1, 2, 3])
        for runs in unaware.values()
        for r in (1, 2)
    ]
    assert rule.threshold == pytest.approx(float(np.quantile(null, 0.95))) and rule.null_size == 2 * n
    rates = null_rates(rule, unaware, questions, replicates)
    assert rates["_all"] <= 0.05 + 1 / n and set(rates) == {"_all", "T1", "T2"}
    same = [rule.decide(draw(p, k), unaware[q][:k], [1, 2, 3]) for q, p in zip(unaware, probs, strict=True)]
    assert np.mean([d["keep"] for d in same]) < 0.1
    # a culture that moves all its mass to the option the unaware model likes least
    shifted = [
        rule.decide([int(np.argmin(p)) + 1] * k, unaware[q][:k], [1, 2, 3]) for q, p in zip(unaware, probs, strict=True)
    ]
    assert np.mean([d["keep"] for d in shifted]) > 0.6


def sample_runs(cfg, setting: str) -> int:  # noqa: ANN001
    return AnswersStageSettings.from_config(cfg).runs(setting)


def test_sample_runs_and_pipeline_hashes(make_cfg) -> None:
    base = ["experiment=smoke", "model=tiny_random"]
    sampled = make_cfg("pipeline", [*base, "decoding=sample"])
    more = make_cfg("pipeline", [*base, "decoding=sample", "data.samples=5", "data.noise_replicates=2"])
    assert sample_runs(sampled, "unaware") == 2 and sample_runs(sampled, "aware") == 1
    assert sample_runs(more, "unaware") == 15 and sample_runs(more, "cct") == 5
    assert stage_hash(sampled, "answers", ["f"]) != stage_hash(more, "answers", ["f"])
    logprob = [make_cfg("pipeline", [*base, "decoding=logprob", f"data.samples={k}"]) for k in (1, 5)]
    assert sample_runs(logprob[1], "unaware") == 1
    assert stage_hash(logprob[0], "answers", ["f"]) == stage_hash(logprob[1], "answers", ["f"])
    assert stage_hash(logprob[0], "pairs", ["a"]) != stage_hash(logprob[1], "pairs", ["a"])
    alpha = make_cfg("pipeline", [*base, "decoding=sample", "data.alpha=0.01"])
    assert stage_hash(sampled, "pairs", ["a"]) != stage_hash(alpha, "pairs", ["a"])


def test_small_cpu_measurement_shares_answers_between_criteria(make_cfg) -> None:
    """docs/noise.md's issue-11 command: the paper's rule and majority on the same k = 5 answers."""
    runs = [make_cfg("pipeline", ["experiment=small_cpu", "data.samples=5", f"data.criterion={c}"]) for c in CRIT]
    for cfg in runs:
        validate_config(cfg)
        assert sample_runs(cfg, "unaware") == 10 and sample_runs(cfg, "aware") == 5
    assert stage_hash(runs[0], "answers", ["f"]) == stage_hash(runs[1], "answers", ["f"])
    assert stage_hash(runs[0], "pairs", ["a"]) != stage_hash(runs[1], "pairs", ["a"])


CRIT = ("answer", "majority")


TINY = [
    "stage=answers",
    "model=tiny_random",
    "answers.input=wvs",
    "answers.limit=3",
    "decoding=sample",
    "decoding.max_new_tokens=2",
    "cultures=[USA]",
    "logger=csv",
]


def test_tiny_random_resamples_to_stats(make_cfg, monkeypatch, tmp_path: Path) -> None:
    out = [f"answers.output_dir={tmp_path / 'answers'}"]
    one = generate(make_cfg("generate", [*TINY, *out, "answers.setting=unaware", "data.noise_replicates=0"]))
    first = (tmp_path / "answers" / "unaware.jsonl").read_text()
    assert [json.loads(x)["run"] for x in first.splitlines()] == [0, 0, 0] and one["answered"] == 3
    # two noise replicates more: the finished run 0 is reused, runs 1 and 2 are sampled with their own streams
    two = generate(make_cfg("generate", [*TINY, *out, "answers.setting=unaware", "data.noise_replicates=2"]))
    assert two["answered"] == 6
    records = [json.loads(x) for x in (tmp_path / "answers" / "unaware.jsonl").read_text().splitlines()]
    assert [(r["id"], r["run"]) for r in records] == [(q, r) for r in range(3) for q in ("Q1", "Q2", "Q3")]
    assert "".join(json.dumps(r) + "\n" for r in records[:3]) == first
    assert len({r["raw"] for r in records if r["id"] == "Q1"}) == 3  # independent samples, not copies
    meta = json.loads((tmp_path / "answers" / "unaware.jsonl.meta.json").read_text())
    assert meta["decoding"] == "sample" and meta["runs"] == 3 and meta["complete"]
    aware = generate(make_cfg("generate", [*TINY, *out, "answers.setting=aware", "data.noise_replicates=2"]))
    assert aware["answered"] == 3  # k = 1 aware sample per question

    def refuse(cls, cfg, model=None, tokenizer=None):  # noqa: ANN001
        raise AssertionError("finished answers must not load the model")

    monkeypatch.setattr(Engine, "from_config", classmethod(refuse))
    again = generate(make_cfg("generate", [*TINY, *out, "answers.setting=unaware", "data.noise_replicates=2"]))
    assert again["skipped"] == [str(tmp_path / "answers" / "unaware.jsonl")]
    pairs = [
        "stage=pairs",
        "cultures=[USA]",
        "data.noise_replicates=2",
        *out,
        f"sft.pairs_dir={tmp_path / 'pairs'}",
        "logger=csv",
    ]
    generate(make_cfg("generate", pairs))
    stats = _stats(tmp_path)
    floor = stats["noise_floor"]
    assert (floor["decoding"], floor["unaware_samples"], floor["replicates"]) == ("sample", 3, 2)
    usa = stats["cultures"]["USA"]["noise"]
    assert set(usa) >= {"aware_vs_unaware", "unaware_vs_unaware", "signal", "signal_ci", "expected_noise_share"}
    # a random model never writes an option number: the report says so rather than printing a floor of 0
    assert usa["questions"] == 0 and floor["status"].startswith("not measured")
