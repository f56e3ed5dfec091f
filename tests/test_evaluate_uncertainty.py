"""Bootstrap intervals and paired tests of the alignment score: agreement with the point estimate, exact small cases,
coverage in a simulation with a known difference, pairing, runs, seeds, and evaluation end to end on tiny_random."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from culturespa.errors import CultureSPAError
from culturespa.evaluate.metrics import Item, culture_report, headline
from culturespa.evaluate.paired import over_seeds, paired_comparison, unpaired_difference
from culturespa.evaluate.uncertainty import BootstrapSettings, ScoreTable, score_intervals, scores, t_interval


def _table(err: list[list[float]] | np.ndarray, worst: list[list[float]] | np.ndarray) -> ScoreTable:
    """One culture; ``err``/``worst`` shaped (runs, questions); every cell scored."""
    e = np.asarray(err, dtype=float)[None]
    w = np.asarray(worst, dtype=float)[None]
    return ScoreTable(
        ("X",), tuple(f"Q{i}" for i in range(e.shape[2])), tuple(range(e.shape[1])), e, w, np.ones_like(e)
    )


def _random_items(rng: np.random.Generator, runs: int = 3, questions: int = 40) -> list[Item]:
    items = []
    for run in range(runs):
        for q in range(questions):
            n = 2 + q % 9
            answer = None if rng.random() < 0.15 else int(rng.integers(0, n + 2))  # some out of range: invalid
            gold = None if q % 7 == 0 else int(rng.integers(1, n + 1))  # some without survey answers
            items.append(Item(f"Q{q}", None, tuple(range(1, n + 1)), answer, gold, run))
    return items


def test_point_estimate_is_the_reported_score_with_invalid_answers_excluded() -> None:
    rng = np.random.default_rng(3)
    items = {"USA": _random_items(rng), "CHN": _random_items(rng)}
    table = ScoreTable.from_items(items)
    reports = {code: culture_report(rows, {}) for code, rows in items.items()}
    assert scores(table)[0] == pytest.approx([reports["USA"]["score"], reports["CHN"]["score"]], abs=1e-9)
    found = score_intervals(table, BootstrapSettings(samples=300))
    assert found["average"]["score"] == pytest.approx(headline(reports), abs=1e-9)
    for code, row in found["cultures"].items():
        assert row["lo"] < reports[code]["score"] < row["hi"]
    assert table.count.sum() == sum(r["valid"] for r in reports.values())  # only valid answers with gold


def test_exact_two_question_bootstrap() -> None:
    # Q0 answered exactly, Q1 at the far end of a 5-point scale. The three distinct resamples are {Q0,Q0} → 100
    # (probability ¼), {Q0,Q1} → 100·(1 − √½) = 29.29 (½) and {Q1,Q1} → 0 (¼): a 40 % interval is that middle value.
    table = _table([[0.0, 16.0]], [[16.0, 16.0]])
    middle = 100 * (1 - np.sqrt(0.5))
    narrow = score_intervals(table, BootstrapSettings(samples=4000, confidence=0.4))["cultures"]["X"]
    assert narrow["score"] == pytest.approx(middle)
    assert narrow["lo"] == pytest.approx(middle) and narrow["hi"] == pytest.approx(middle)
    wide = score_intervals(table, BootstrapSettings(samples=4000, confidence=0.95))["cultures"]["X"]
    assert wide["lo"] == pytest.approx(0.0) and wide["hi"] == pytest.approx(100.0)


def test_exact_paired_p_values() -> None:
    # Base answers both questions exactly (100), the adapter misses both by the full scale (0): Δ = −100.
    base, tuned = _table([[0.0, 0.0]], [[16.0, 16.0]]), _table([[16.0, 16.0]], [[16.0, 16.0]])
    samples = 4000
    perm = paired_comparison(base, tuned, BootstrapSettings(samples=samples, p_value="permutation"))
    # Of the four equally likely swaps, two keep |Δ| = 100 (none or both swapped) and two give Δ = 0: p = ½.
    assert perm["average"]["delta"] == pytest.approx(-100.0)
    assert perm["average"]["p"] == pytest.approx(0.5, abs=0.03) and perm["p_method"] == "permutation"
    # Every paired resample gives Δ = −100, so the two-sided bootstrap p is its floor 2 / (samples + 1).
    boot = paired_comparison(base, tuned, BootstrapSettings(samples=samples, p_value="bootstrap"))
    assert boot["cultures"]["X"]["p"] == pytest.approx(2 / (samples + 1))
    assert boot["cultures"]["X"]["delta_lo"] == boot["cultures"]["X"]["delta_hi"] == pytest.approx(-100.0)
    # The same system twice: no difference, interval [0, 0], p = 1 whichever test.
    same = paired_comparison(base, base, BootstrapSettings(samples=200))
    assert same["average"]["delta"] == 0.0 and same["average"]["p"] == 1.0
    assert same["average"]["delta_lo"] == same["average"]["delta_hi"] == 0.0


def test_runs_are_resampled_too() -> None:
    # Every question alike within a run: run 0 all exact (100), run 1 all at the far end (0). Resampling questions
    # alone would always give 50; resampling runs gives {0,0} → 100, {0,1} → 50, {1,1} → 0.
    table = _table([[0.0] * 5, [16.0] * 5], [[16.0] * 5, [16.0] * 5])
    row = score_intervals(table, BootstrapSettings(samples=2000))["cultures"]["X"]
    assert row["score"] == pytest.approx(50.0)
    assert row["lo"] == pytest.approx(0.0) and row["hi"] == pytest.approx(100.0)


def _population(rng: np.random.Generator, q: int) -> tuple[np.ndarray, ...]:
    """Questions with 2–10 options; the adapter answers half of them closer to the survey majority than the base."""
    n = rng.integers(2, 11, size=q)
    gold = rng.integers(1, n + 1)
    base = np.clip(gold + rng.integers(-2, 3, size=q), 1, n)
    better = np.clip(gold + rng.integers(-1, 2, size=q), 1, n)
    tuned = np.where(rng.random(q) < 0.5, better, base)
    return n, gold, base, tuned


def _system(n: np.ndarray, gold: np.ndarray, answers: np.ndarray) -> ScoreTable:
    return _table(((answers - gold) ** 2)[None], ((n - 1) ** 2)[None])


def _score(n: np.ndarray, gold: np.ndarray, answers: np.ndarray) -> float:
    return float(100 * (1 - np.sqrt(((answers - gold) ** 2).sum() / ((n - 1) ** 2).sum())))


def test_paired_interval_covers_the_known_difference_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    n, gold, base, tuned = _population(rng, 2_000_000)  # the population's difference, to ±0.01
    truth = _score(n, gold, tuned) - _score(n, gold, base)
    draws, covered = 200, 0
    for draw in range(draws):
        n, gold, base, tuned = _population(rng, 150)
        found = paired_comparison(
            _system(n, gold, base),
            _system(n, gold, tuned),
            BootstrapSettings(samples=300, seed=draw, p_value="bootstrap"),
        )
        covered += found["average"]["delta_lo"] <= truth <= found["average"]["delta_hi"]
    # Nominal 0.95 (0.952 measured over 1,000 draws); ±3 binomial standard errors for 200 draws.
    assert 0.90 <= covered / draws <= 0.99


def test_pairing_narrows_the_interval_when_questions_share_difficulty() -> None:
    # Questions differ a lot in difficulty but the adapter changes only a few answers: the question-to-question
    # spread is common to both systems and cancels from the paired difference, not from the unpaired one.
    rng = np.random.default_rng(1)
    n = rng.integers(2, 11, size=200)
    gold = rng.integers(1, n + 1)
    base = np.where(rng.random(200) < 0.5, gold, np.where(gold > n / 2, 1, n))
    tuned = np.where(rng.random(200) < 0.1, gold, base)
    a, b = _system(n, gold, base), _system(n, gold, tuned)
    settings = BootstrapSettings(samples=1000, p_value="bootstrap")
    paired = paired_comparison(a, b, settings)["average"]
    unpaired = unpaired_difference(a, b, settings)["average"]
    assert paired["delta"] > 0 and paired["delta_lo"] > 0  # the paired interval excludes 0 …
    assert unpaired[0] < 0 < unpaired[1]  # … the unpaired one cannot tell
    assert paired["delta_hi"] - paired["delta_lo"] < 0.35 * (unpaired[1] - unpaired[0])


def test_bca_agrees_with_scipy_where_it_differs_from_percentile() -> None:
    from scipy.stats import bootstrap

    # A skewed case: 30 questions, most answered exactly, the rest at the far end of the scale.
    rng = np.random.default_rng(0)
    n = rng.integers(2, 11, size=30)
    gold = rng.integers(1, n + 1)
    answers = np.where(rng.random(30) < 0.8, gold, np.where(gold > n / 2, 1, n))
    err, worst = ((answers - gold) ** 2).astype(float), ((n - 1) ** 2).astype(float)
    table = _system(n, gold, answers)
    ours = score_intervals(table, BootstrapSettings(samples=20000, method="bca"))["cultures"]["X"]
    plain = score_intervals(table, BootstrapSettings(samples=20000))["cultures"]["X"]

    def stat(e: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
        return 100 * (1 - np.sqrt(e.sum(axis=axis) / w.sum(axis=axis)))

    theirs = bootstrap((err, worst), stat, paired=True, n_resamples=20000, method="BCa", random_state=0)
    low, high = theirs.confidence_interval.low, theirs.confidence_interval.high
    width = high - low
    assert ours["lo"] == pytest.approx(low, abs=0.03 * width) and ours["hi"] == pytest.approx(high, abs=0.03 * width)
    assert abs(plain["hi"] - high) > 0.15 * width  # the correction matters here


def test_over_seeds_resamples_seeds() -> None:
    # Base exact everywhere (100) in both seeds; the adapter is exact in seed A and at the far end in seed B, on
    # every question: Δ per seed 0 and −100. Seed resamples {A,A} → 0, {A,B} → −50, {B,B} → −100.
    base = _table([[0.0] * 4], [[16.0] * 4])
    worse = _table([[16.0] * 4], [[16.0] * 4])
    found = over_seeds([(base, base), (base, worse)], BootstrapSettings(samples=4000))["average"]
    assert found["delta"] == pytest.approx(-50.0)
    assert found["delta_lo"] == pytest.approx(-100.0) and found["delta_hi"] == pytest.approx(0.0)
    assert found["p"] == pytest.approx(0.5, abs=0.04)  # P(Δ* ≥ 0) = ¼, doubled


def test_settings_are_checked_and_read_from_config(make_cfg) -> None:  # noqa: ANN001
    with pytest.raises(CultureSPAError, match=r"eval.bootstrap.confidence=1.5"):
        BootstrapSettings(confidence=1.5)
    with pytest.raises(CultureSPAError, match=r"eval.bootstrap.method='normal'"):
        BootstrapSettings(method="normal")
    cfg = make_cfg("evaluate", ["eval.bootstrap.samples=50", "eval.bootstrap.method=bca"])
    assert BootstrapSettings.from_config(cfg) == BootstrapSettings(samples=50, method="bca")
    assert BootstrapSettings.from_config(None) == BootstrapSettings()


def test_evaluate_writes_intervals(make_cfg) -> None:  # noqa: ANN001
    from culturespa.evaluate.run import evaluate

    overrides = ["model=tiny_random", "logger=none", "cultures=[USA,CHN]", "decoding=logprob", "eval.limit=8"]
    summary = evaluate(make_cfg("evaluate", [*overrides, "eval.bootstrap.samples=200"]))
    result = json.loads(Path(summary["alignment"]).read_text())
    for row in result["cultures"].values():
        assert row["score_lo"] <= row["score"] <= row["score_hi"] and row["score_lo"] < row["score_hi"]
    assert result["average_lo"] <= result["average"] <= result["average_hi"]
    assert result["uncertainty"]["samples"] == 200 and result["uncertainty"]["questions"] == 8
    assert summary["average_ci"] == [result["average_lo"], result["average_hi"]]


class _Run:
    """Stands in for a W&B run: records the summary and what was logged."""

    def __init__(self) -> None:
        self.summary: dict = {}
        self.logged: dict = {}

    def log(self, data: dict) -> None:
        self.logged.update(data)

    def finish(self) -> None:
        pass


def test_wandb_summaries_carry_error_bars(make_cfg, monkeypatch) -> None:  # noqa: ANN001
    from culturespa.evaluate.report import log_results
    from culturespa.pipeline import _log_comparison

    row = {"score": 40.0, "score_lo": 38.5, "score_hi": 41.5, "valid": 9, "total": 10, "invalid": 1}
    results = {
        "cultures": {"USA": {**row, "js_similarity": 0.5, "topics": {}}},
        "average": 40.0,
        "average_lo": 38.5,
        "average_hi": 41.5,
    }
    run = _Run()
    log_results(run, results)
    assert run.summary["alignment/USA_lo"] == 38.5 and run.summary["alignment/USA_hi"] == 41.5
    assert run.summary["alignment/average_lo"] == 38.5 and run.summary["alignment/average_hi"] == 41.5
    assert {"score_lo", "score_hi"} <= set(run.logged["alignment/cultures"].columns)

    pipeline_run = _Run()
    monkeypatch.setattr("culturespa.pipeline.start_run", lambda *a, **k: pipeline_run)
    monkeypatch.setattr("culturespa.pipeline.track_comparison", lambda *a, **k: None)  # lineage: its own test
    keys = {"base": 40.0, "culturespa": 39.0, "base_lo": 38.0, "base_hi": 42.0, "culturespa_lo": 37.0}
    keys.update({"culturespa_hi": 41.0, "delta": -1.0, "delta_lo": -2.0, "delta_hi": -0.1, "p": 0.03})
    culture = {"culture": "USA", "base_valid": 9, "culturespa_valid": 10, "total": 10, **keys}
    _log_comparison(make_cfg("pipeline"), {"cultures": [culture], "average": dict(keys), "references": {}})
    assert pipeline_run.summary["average/delta_lo"] == -2.0 and pipeline_run.summary["average/p"] == 0.03
    assert pipeline_run.summary["delta/USA_hi"] == -0.1 and pipeline_run.summary["p/USA"] == 0.03


def test_bootstrap_settings_do_not_change_the_evaluation_stage(make_cfg) -> None:  # noqa: ANN001
    from culturespa.stages.identity import stage_hash

    plain = stage_hash(make_cfg("pipeline"), "evaluate")
    assert (
        stage_hash(make_cfg("pipeline", ["eval.bootstrap.samples=50", "eval.bootstrap.method=bca"]), "evaluate")
        == plain
    )
    assert stage_hash(make_cfg("pipeline", ["eval.limit=5"]), "evaluate") != plain


def test_printed_tables_show_intervals(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from culturespa.evaluate.comparison import print_comparison
    from culturespa.evaluate.report import print_table

    row = {"score": 40.07, "score_lo": 38.9, "score_hi": 41.2, "valid": 9, "total": 10, "js_similarity": 0.5}
    print_table({"cultures": {"USA": row}, "average": 40.07, "average_lo": 38.9, "average_hi": 41.2})
    keys = {"base": 40.07, "culturespa": 38.8, "base_lo": 38.9, "base_hi": 41.2, "culturespa_lo": 37.5}
    keys.update({"culturespa_hi": 40.1, "delta_lo": -2.1, "delta_hi": -0.4, "p": 0.004})
    culture = {"culture": "USA", "base_valid": 9, "culturespa_valid": 10, "total": 10, **keys}
    comparison = {"model": "m", "prompt": "p1", "cultures": [culture], "average": keys}
    print_comparison({**comparison, "uncertainty": {"confidence": 0.9, "p_value": "permutation"}}, Console())
    out = capsys.readouterr().out
    # twice in each table (culture, average) and once in each verdict paragraph
    assert out.count("40.07 [38.90, 41.20]") == 4 + 2 and "-1.27 [-2.10, -0.40]" in out and "0.004" in out
    assert "[90% CI]" in out and "permutation test" in out


def test_t_interval_is_the_means_t_interval_and_needs_two_values() -> None:
    """mean ± t(0.975, n − 1) · sd / √n: [1, 2, 3, 4] gives 2.5 ± 3.1824 · 0.6455; one value gives no interval."""
    lo, hi = t_interval([1.0, 2.0, 3.0, 4.0], 0.95)
    assert (lo, hi) == pytest.approx((2.5 - 2.0543, 2.5 + 2.0543), abs=1e-4)
    assert t_interval([2.0]) is None and t_interval([]) is None
