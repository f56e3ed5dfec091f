"""Model evaluation end to end on tiny_random (base, joint and specific adapters), resume, and early one-line errors;
the embedded model on 2 cultures and a few questions (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from culturespa.errors import CultureSPAError
from culturespa.evaluate.run import evaluate

REPO = Path(__file__).resolve().parents[1]


def make_adapter(folder: Path, seed: int, base_model: str = "tiny_random", user_prefix: str | None = None) -> Path:
    """A LoRA adapter on tiny_random in the training layout: PEFT files, prompt_style.yaml, culturespa.json."""
    import torch
    from peft import LoraConfig, get_peft_model

    from culturespa.config import compose
    from culturespa.models.loader import ModelSpec, load_model
    from culturespa.prompts.builder import PromptStyle

    cfg = compose("evaluate", ["model=tiny_random", "model.dtype=float32"], output_dir=folder.parent)
    model = load_model(ModelSpec.from_config(cfg.model), cfg.paths.cache_dir)
    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(folder)
    style = PromptStyle.from_config(cfg.templates, cfg.prompt)
    if user_prefix:
        style.templates["answer"]["user"] = user_prefix + style.templates["answer"]["user"]
    style.save(folder)
    meta = {"base_model": base_model, "mode": "joint", "cultures": ["USA", "CHN"], "peft": {"r": 4}}
    (folder / "culturespa.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    joint = make_adapter(root / "joint", seed=1)
    make_adapter(root / "specific" / "USA", seed=1)
    make_adapter(root / "specific" / "CHN", seed=2)
    wrong = make_adapter(root / "wrong", seed=3, base_model="llama3_8b_instruct")
    return {"joint": joint, "specific": root / "specific", "wrong": wrong}


def _cfg(make_cfg, *overrides: str):
    return make_cfg("evaluate", ["model=tiny_random", "logger=none", "eval.limit=3", *overrides])


def _answers(summary: dict, name: str) -> list[dict]:
    folder = Path(summary["alignment"]).parent / "answers"
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def test_base_model_end_to_end_schema(make_cfg) -> None:
    summary = evaluate(_cfg(make_cfg, "cultures=[USA,CHN]", "decoding=logprob", "prompt=p1"))
    result = json.loads(Path(summary["alignment"]).read_text())
    assert result["metric"] == "alignment" and list(result["cultures"]) == ["USA", "CHN"]
    for row in result["cultures"].values():
        assert row["valid"] == row["total"] == 3  # log-prob answers are always valid
        assert 0.0 <= row["score"] <= 100.0 and 0.0 <= row["js_similarity"] <= 1.0
        assert row["topics"]["Social Values, Attitudes & Stereotypes"]["total"] == 3
    assert result["average"] == pytest.approx(
        (result["cultures"]["USA"]["score"] + result["cultures"]["CHN"]["score"]) / 2
    )
    records = _answers(summary, "p1_USA.jsonl")
    assert [r["id"] for r in records] == ["Q1", "Q2", "Q3"]
    assert {"id", "culture", "setting", "run", "raw", "answer", "valid", "distribution", "question"} <= set(records[0])
    assert sum(records[0]["distribution"].values()) == pytest.approx(1.0)


def test_joint_and_specific_adapters(make_cfg, adapters) -> None:
    overrides = ("cultures=[USA,CHN]", "decoding=logprob", "prompt=unaware")
    base = evaluate(_cfg(make_cfg, *overrides))
    base_records = _answers(base, "unaware.jsonl")  # unaware: asked once, scored against both cultures
    assert {r["culture"] for r in base_records} == {None}

    def with_adapter(kind: str) -> dict:
        cfg = _cfg(make_cfg, *overrides, f"eval.adapter={adapters[kind]}")
        with open_dict(cfg):
            cfg.eval.output_dir = str(Path(cfg.eval.output_dir).parent / kind)
        return evaluate(cfg)

    joint_records = _answers(with_adapter("joint"), "unaware.jsonl")
    assert [r["distribution"] for r in joint_records] != [r["distribution"] for r in base_records]

    specific = with_adapter("specific")
    usa = _answers(specific, "unaware_USA.jsonl")
    chn = _answers(specific, "unaware_CHN.jsonl")
    # USA's own adapter is the joint one (same seed): identical answers; CHN's adapter differs
    flat = lambda records: [p for r in records for p in r["distribution"].values()]  # noqa: E731
    assert flat(usa) == pytest.approx(flat(joint_records), abs=1e-5)
    assert [r["distribution"] for r in chn] != [r["distribution"] for r in usa]
    result = json.loads(Path(specific["alignment"]).read_text())
    assert result["setting"]["adapter_kind"] == "specific"


@pytest.mark.parametrize("chunk", [0, -2])
def test_evaluation_refuses_a_resume_chunk_that_would_answer_nothing(make_cfg, chunk: int) -> None:
    """A chunk <= 0 once became 256 (0) or an empty range (negative: no question answered, no error)."""
    cfg = _cfg(make_cfg, "cultures=USA", "decoding=logprob", "prompt=p1", f"answers.resume_chunk={chunk}")
    with pytest.raises(CultureSPAError, match=rf"answers.resume_chunk={chunk} must be a positive integer"):
        evaluate(cfg)


def test_interrupted_evaluation_resumes(make_cfg, monkeypatch) -> None:
    from culturespa.infer import engine as engine_mod

    # chunks of two by position: the finished first chunk is skipped, the interrupted second one redone whole
    cfg = _cfg(make_cfg, "cultures=USA", "decoding=logprob", "prompt=p1", "answers.resume_chunk=2")
    first = evaluate(cfg)
    path = Path(first["alignment"]).parent / "answers" / "p1_USA.jsonl"
    lines = path.read_text().splitlines()
    # simulate a kill after two answers: part file with two whole lines and a torn third, no final file
    path.with_name(path.name + ".part").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
    path.unlink()
    asked: list[str] = []
    original = engine_mod.Engine.answer

    def counting(self, requests, *args, **kwargs):
        asked.extend(r.key for r in requests)
        return original(self, requests, *args, **kwargs)

    monkeypatch.setattr(engine_mod.Engine, "answer", counting)
    second = evaluate(cfg)
    assert asked == ["Q3|USA|0"]
    assert path.read_text().splitlines() == lines
    assert second["scores"] == pytest.approx(first["scores"])
    # other settings in the same folder are refused instead of being mixed in
    with open_dict(cfg):
        cfg.prompt.system = "cct"
    with pytest.raises(CultureSPAError, match="holds answers made with other settings"):
        evaluate(cfg)


def test_sample_runs_are_averaged(make_cfg) -> None:
    summary = evaluate(
        _cfg(make_cfg, "cultures=USA", "decoding=sample", "eval.runs=2", "eval.limit=2", "decoding.max_new_tokens=3")
    )
    result = json.loads(Path(summary["alignment"]).read_text())
    row = result["cultures"]["USA"]
    assert row["runs"] == 2 and row["total"] == 4 and len(row["run_scores"]) == 2
    records = _answers(summary, "p1_USA.jsonl")
    assert sorted((r["id"], r["run"]) for r in records) == [("Q1", 0), ("Q1", 1), ("Q2", 0), ("Q2", 1)]


def _no_model_loading(monkeypatch) -> None:
    import culturespa.models.loader as loader

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the configuration was checked")

    monkeypatch.setattr(loader, "load_model", refuse)


def test_errors_before_any_model_work(make_cfg, adapters, monkeypatch, tmp_path: Path) -> None:
    _no_model_loading(monkeypatch)
    with pytest.raises(CultureSPAError, match=r"eval.adapter: .*nope: no such adapter folder"):
        evaluate(_cfg(make_cfg, "cultures=USA", f"eval.adapter={tmp_path / 'nope'}"))
    with pytest.raises(CultureSPAError, match=r"trained on base model 'llama3_8b_instruct', but model='tiny_random'"):
        evaluate(_cfg(make_cfg, "cultures=USA", f"eval.adapter={adapters['wrong']}"))
    with pytest.raises(CultureSPAError, match=r"no adapter for culture\(s\) DEU"):
        evaluate(_cfg(make_cfg, "cultures=[USA,DEU]", f"eval.adapter={adapters['specific']}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CultureSPAError, match="neither an adapter folder"):
        evaluate(_cfg(make_cfg, "cultures=USA", f"eval.adapter={tmp_path / 'empty'}"))
    cfg = _cfg(make_cfg, "cultures=USA")
    with open_dict(cfg):
        cfg.cultures = {"XYZ": "x"}
    with pytest.raises(CultureSPAError, match="unknown culture 'XYZ'"):
        evaluate(cfg)


def test_adapter_config_base_model_is_checked_without_culturespa_json(adapters, tmp_path: Path) -> None:
    import shutil

    from culturespa.config import compose
    from culturespa.evaluate.adapters import check_base_model

    folder = tmp_path / "plain"
    shutil.copytree(adapters["joint"], folder)
    (folder / "culturespa.json").unlink()
    cfg = compose("evaluate", ["model=tiny_random"], output_dir=tmp_path)
    check_base_model(folder, cfg.model, cfg.paths.cache_dir)  # recorded as the cache folder of tiny_random: fine
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/somewhere/Meta-Llama-3-8B-Instruct"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CultureSPAError, match="Meta-Llama-3-8B-Instruct"):
        check_base_model(folder, cfg.model, cfg.paths.cache_dir)


def test_cli_missing_adapter_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, WANDB_MODE="disabled")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "evaluate.py"),
            "model=tiny_random",
            "cultures=USA",
            "logger=none",
            f"eval.adapter={tmp_path / 'missing'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: eval.adapter: {tmp_path / 'missing'}: no such adapter folder"]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_embedded_model_two_cultures(make_cfg) -> None:
    overrides = ["cultures=[USA,CHN]", "prompt=p1", "decoding=greedy", "decoding.max_new_tokens=6", "eval.limit=3"]
    cfg = make_cfg("evaluate", [*overrides, "logger=none"])
    summary = evaluate(cfg)
    result = json.loads(Path(summary["alignment"]).read_text())
    for code in ("USA", "CHN"):
        row = result["cultures"][code]
        assert row["total"] == 3 and row["valid"] >= 2  # SmolLM2 answers most WVS questions with an option number
        assert 0.0 <= row["score"] <= 100.0
    records = _answers(summary, "p1_USA.jsonl")
    assert all(r["raw"] for r in records)
