"""stage=export: the pairs as alpaca / sharegpt / messages JSON with a LLaMA-Factory dataset_info.json, each example
the chat our own SFT trains on (same system prompt per culture, split and order)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from culturespa.config import compose
from culturespa.errors import CultureSPAError
from culturespa.generate.run import generate
from culturespa.prompts.builder import PromptStyle
from culturespa.settings import DataSettings
from culturespa.train.run import training_style
from culturespa.train.sft_data import PairChats, prepare_splits, shuffled
from culturespa.train.synthetic import write_pairs
from culturespa.wvs.cultures import get_culture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"), {"USA": 20, "CHN": 12})


def export(pairs: Path, out: Path, fmt: str, *extra: str) -> tuple[dict, object]:
    cfg = compose(
        "generate",
        [
            "stage=export",
            f"export.format={fmt}",
            "cultures=[USA,CHN]",
            f"sft.pairs_dir={pairs}",
            f"export.output_dir={out}",
            "logger=none",
            *extra,
        ],
        output_dir=out / "run",
    )
    return generate(cfg), cfg


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_alpaca_matches_the_sft_chats_and_the_paper_layout(pairs: Path, tmp_path: Path) -> None:
    summary, cfg = export(pairs, tmp_path / "alpaca", "alpaca")
    out = Path(summary["output_dir"])
    data = DataSettings.from_config(cfg.data)
    splits = prepare_splits(cfg.sft.pairs_dir, data, ["USA", "CHN"])
    chats = PairChats(training_style(PromptStyle.from_config(cfg.templates, cfg.prompt), data), "aware")
    info = load(out / "dataset_info.json")
    assert set(info) == {
        "culture_USA",
        "culture_CHN",
        "culture_all",
        "culture_USA_val",
        "culture_CHN_val",
        "culture_all_val",
    }
    assert info["culture_all"] == {
        "file_name": "culture_all.json",
        "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
    }
    for code in ("USA", "CHN"):
        rows = load(out / f"culture_{code}.json")
        expected = shuffled(splits[code].train, int(cfg.data.seed), code)
        assert [r["id"] for r in rows] == [p.id for p in expected]
        assert len(load(out / f"culture_{code}_val.json")) == len(splits[code].val) > 0
        for row, pair in zip(rows, expected, strict=True):
            assert set(row) == {"instruction", "input", "output", "system", "id", "culture"}
            assert [
                {"role": "system", "content": row["system"]},
                {"role": "user", "content": row["instruction"]},
                {"role": "assistant", "content": row["output"]},
            ] == chats.messages(pair)
            assert get_culture(code).adjective in row["system"] and row["input"] == ""
            assert str(pair.answer) in row["output"] and row["culture"] == code
    joint = load(out / "culture_all.json")
    train = [p for c in ("USA", "CHN") for p in splits[c].train]
    assert [r["id"] for r in joint] == [p.id for p in shuffled(train, int(cfg.data.seed), "joint")]
    assert {r["culture"] for r in joint} == {"USA", "CHN"}
    assert summary["examples"]["all"] == len(joint)


def test_sharegpt_and_messages_formats(pairs: Path, tmp_path: Path) -> None:
    alpaca = load(Path(export(pairs, tmp_path / "a", "alpaca")[0]["output_dir"]) / "culture_USA.json")
    summary, _ = export(pairs, tmp_path / "s", "sharegpt")
    out = Path(summary["output_dir"])
    sharegpt = load(out / "culture_USA.json")
    assert load(out / "dataset_info.json")["culture_USA"] == {
        "file_name": "culture_USA.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
    }
    for a, s in zip(alpaca, sharegpt, strict=True):
        assert s["system"] == a["system"]
        assert s["conversations"] == [
            {"from": "human", "value": a["instruction"]},
            {"from": "gpt", "value": a["output"]},
        ]
    summary, _ = export(pairs, tmp_path / "m", "messages")
    out = Path(summary["output_dir"])
    messages = load(out / "culture_USA.json")
    assert [m["messages"][0]["role"] for m in messages] == ["system"] * len(alpaca)
    assert [m["messages"][-1]["content"] for m in messages] == [a["output"] for a in alpaca]
    assert load(out / "dataset_info.json")["culture_USA"]["tags"]["role_tag"] == "role"
    import datasets  # what TRL's SFTTrainer is given: a conversational "messages" column

    rows = datasets.load_dataset("json", data_files=str(out / "culture_all.json"), split="train")
    assert rows.num_rows == len(load(out / "culture_all.json")) and rows[0]["messages"][1]["role"] == "user"


def test_cct_system_prompts_name_similar_cultures(pairs: Path, tmp_path: Path) -> None:
    summary, _ = export(pairs, tmp_path / "cct", "alpaca", "data.system=cct")
    row = load(Path(summary["output_dir"]) / "culture_USA.json")[0]
    aware = load(Path(export(pairs, tmp_path / "aw", "alpaca")[0]["output_dir"]) / "culture_USA.json")[0]
    assert row["system"] != aware["system"] and row["instruction"] == aware["instruction"]


def test_bad_format_and_missing_pairs_are_one_line_errors(pairs: Path, tmp_path: Path) -> None:
    with pytest.raises(CultureSPAError, match="export.format='csv'"):
        export(pairs, tmp_path / "x", "csv")
    with pytest.raises(CultureSPAError, match="pairs file for culture"):
        export(pairs, tmp_path / "y", "alpaca", "cultures=[USA,KEN]")
    assert not (tmp_path / "y").exists()


def test_cli_export(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "generate.py",
        "stage=export",
        "export.format=sharegpt",
        "cultures=[USA,CHN]",
        "logger=none",
        f"sft.pairs_dir={pairs}",
        f"export.output_dir={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dataset_info.json" in proc.stdout and (out / "dataset_info.json").is_file()
