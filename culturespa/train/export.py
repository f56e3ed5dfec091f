"""Stage ``export``: the culture-related QA pairs as SFT data for other trainers (LLaMA-Factory, TRL).

    python generate.py stage=export export.format=alpaca cultures=all

Each example is the chat our own SFT trains on (``train/sft_data.PairChats``: the culture's system prompt, the
question, the target answer; ``data.system`` and the templates decide them), after the same validation split and
``data.fraction`` subsample, in the same order. Files, one JSON list each, named as the paper's LLaMA-Factory data:
``culture_{CODE}.json`` (one culture, the culture-specific run's order), ``culture_all.json`` (every selected culture,
the joint run's order), ``*_val.json`` for the held-out pairs, and ``dataset_info.json`` declaring each file so
LLaMA-Factory reads the folder as its ``dataset_dir``. Formats:

- ``alpaca``: ``{instruction, input, output, system}`` (+ ``history`` when the prompt has in-context examples);
- ``sharegpt``: ``{conversations: [{from: human|gpt, value}], system}``;
- ``messages``: ``{messages: [{role, content}]}`` with the system turn first (TRL's conversational format).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.errors import CultureSPAError
from culturespa.prompts.builder import PromptStyle
from culturespa.settings import DataSettings
from culturespa.train.sft_data import Pair, PairChats, prepare_splits, shuffled
from culturespa.utils.jsonl import write_json
from culturespa.wvs.survey import WVSData

log = logging.getLogger("culturespa.generate")
FORMATS = ("alpaca", "sharegpt", "messages")
INFO_FILE = "dataset_info.json"
JOINT = "all"


def split_chat(messages: list[dict[str, str]]) -> tuple[str, list[tuple[str, str]], str, str]:
    """(system, earlier user/assistant exchanges, last user turn, target answer) of a training chat."""
    has_system = bool(messages) and messages[0]["role"] == "system"
    system = messages[0]["content"] if has_system else ""
    turns = messages[1:] if has_system else messages
    if len(turns) < 2 or turns[-1]["role"] != "assistant" or turns[-2]["role"] != "user":
        raise CultureSPAError("export: a training chat must end with a user turn and the assistant's answer")
    history = [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns) - 2, 2)]
    return system, history, turns[-2]["content"], turns[-1]["content"]


def to_record(fmt: str, pair: Pair, messages: list[dict[str, str]], with_history: bool) -> dict[str, Any]:
    system, history, instruction, output = split_chat(messages)
    if fmt == "alpaca":
        record: dict[str, Any] = {"instruction": instruction, "input": "", "output": output, "system": system}
        if with_history:
            record["history"] = [list(h) for h in history]
    elif fmt == "sharegpt":
        turns = [t for h in history for t in h] + [instruction, output]
        conversation = [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(turns)]
        record = {"conversations": conversation, "system": system}
    else:
        record = {"messages": messages}
    return record | {"id": pair.id, "culture": pair.culture}


def dataset_entry(fmt: str, file_name: str, with_history: bool) -> dict[str, Any]:
    """A LLaMA-Factory ``dataset_info.json`` entry for one exported file."""
    if fmt == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
        if with_history:
            columns["history"] = "history"
        return {"file_name": file_name, "columns": columns}
    if fmt == "sharegpt":
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
        }
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }


def run_export(cfg: DictConfig, cultures: list[str]) -> dict[str, Any]:
    """Write the selected cultures' pairs in ``export.format`` into ``export.output_dir``; returns the file list."""
    from culturespa.train.run import training_style  # pulls in torch and Lightning (seconds): only when exporting

    fmt = str(cfg.export.format)
    if fmt not in FORMATS:
        raise CultureSPAError(f"export.format={fmt!r} is not valid; choose one of: {', '.join(FORMATS)}")
    data = DataSettings.from_config(cfg.data)
    splits = prepare_splits(cfg.sft.pairs_dir, data, cultures)  # pairs files checked (one-line errors) before writing
    style = training_style(PromptStyle.from_config(cfg.templates, cfg.prompt), data)
    wvs = None
    if style.system == "cct":
        wvs = WVSData.load(cfg.paths.wvs_dir)
    chats = PairChats(style, style.system, wvs)
    seed = int(cfg.data.seed)
    datasets: dict[str, list[Pair]] = {}
    for code in cultures:
        datasets[code] = shuffled(splits[code].train, seed, code)  # the culture-specific job's order
        datasets[f"{code}_val"] = list(splits[code].val)
    datasets[JOINT] = shuffled([p for c in cultures for p in splits[c].train], seed, "joint")  # the joint job's
    datasets[f"{JOINT}_val"] = [p for c in cultures for p in splits[c].val]

    rendered = {name: [(p, chats.messages(p)) for p in pairs] for name, pairs in datasets.items() if pairs}
    with_history = any(len(split_chat(m)[1]) > 0 for rows in rendered.values() for _, m in rows)
    out = Path(str(cfg.export.output_dir))
    info: dict[str, Any] = {}
    files: dict[str, str] = {}
    for name, rows in rendered.items():
        file_name = f"culture_{name}.json"
        write_json(out / file_name, [to_record(fmt, p, m, with_history) for p, m in rows])
        info[f"culture_{name}"] = dataset_entry(fmt, file_name, with_history)
        files[name] = str(out / file_name)
    write_json(out / INFO_FILE, info)
    counts = {name: len(rows) for name, rows in rendered.items()}
    log.info("export: %s data for %d cultures written to %s (%s)", fmt, len(cultures), out, counts)
    print(f"export: {fmt} files and {INFO_FILE} in {out}; LLaMA-Factory: dataset_dir: {out}, dataset: culture_{JOINT}")
    return {"stage": "export", "format": fmt, "output_dir": str(out), "files": files, "examples": counts}
