"""Where a stage file came from: the settings that made it, in readable form, and the files it was made from.

A finished stage file ``X.jsonl`` carries, in its sidecar ``X.jsonl.meta.json`` (beside the fingerprint of
:mod:`culturespa.stages.outputs`), a ``provenance`` entry::

    {"stage": "pairs", "made_with": {"debug": "default", "model": "tiny_random", "decoding": "logprob", ...},
     "settings": {<the stage's deciding settings, as the pipeline's done marker records them>},
     "inputs": [{"path": ".../unaware.jsonl", "sha1": "…", "fingerprint": "…"}, ...]}

``made_with`` holds the readable settings of the whole chain (a pairs file names the model and decoding of the
answers it was built from). A stage that reads a stage file compares that with its own config: each differing key is
one warning line (``pairs/USA.jsonl was made with debug=default, this run has debug=none``); under a ``paper_*``
experiment it is a one-line error instead, since a paper result must never rest on a debug or foreign file. Files
written before provenance was recorded are "unknown": one warning per run, never an error.

An adapter carries the same entry in its ``culturespa.json`` (``stage: train``: its pairs' ``made_with`` plus
training's own debug preset and model, and the pairs files as inputs); evaluation compares it the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.errors import CultureSPAError
from culturespa.stages import lineage
from culturespa.stages.identity import OUTPUT_HASH_LEN, stage_settings
from culturespa.utils.artifacts import Spec
from culturespa.utils.jsonl import write_json
from culturespa.wvs.cultures import resolve_cultures

log = logging.getLogger("culturespa.provenance")

# Readable name (as a user overrides it) → config key it is read from.
READABLE: dict[str, str] = {
    "debug": "paths.debug",
    "model": "model.name",
    "decoding": "decoding.mode",
    "data.criterion": "data.criterion",
    "data.system": "data.system",
}
# The readable settings each stage decides itself; the rest of a file's ``made_with`` is inherited from its inputs.
OWN: dict[str, tuple[str, ...]] = {
    "questions": ("debug", "model"),
    "filter": ("debug",),
    "answers": ("debug", "model", "decoding"),
    "merge-answers": ("debug", "model", "decoding"),
    "pairs": ("debug", "data.criterion", "data.system"),
}
TRAIN_OWN = ("debug", "model")  # the readable settings training decides itself (the rest: its pairs')
# The stage whose deciding settings (stages.identity.DECIDING_KEYS) a generate stage's files record.
_DECIDED_AS = {"merge-answers": "answers"}
# Artifact roles of lineage specs that are stage files (the pool, the survey and user files are not).
_STAGE_ROLES = (lineage.QUESTIONS, lineage.FILTERED, lineage.PAIRS)
SIDECAR = ".meta.json"


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def _read(path: Path) -> dict[str, Any]:
    return _read_json(sidecar(path))


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file's content; {} when it is missing or unreadable (its provenance is then unknown)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def current(cfg: DictConfig) -> dict[str, Any]:
    """This run's readable settings (every key of :data:`READABLE`; ``debug`` is ``none`` outside a debug preset)."""
    values = {name: OmegaConf.select(cfg, key, default=None) for name, key in READABLE.items()}
    values["debug"] = str(values["debug"] or "none")
    return values


def experiment(cfg: DictConfig) -> str | None:
    """The experiment preset of this run (``paper_joint``...), or ``paper`` for a config tagged as a paper run."""
    chosen = OmegaConf.select(cfg, "hydra.runtime.choices.experiment", default=None)
    if chosen is None:
        try:
            from hydra.core.hydra_config import HydraConfig

            chosen = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
        except ValueError:  # no Hydra run: a test or a library call
            chosen = None
    if chosen not in (None, "null"):
        return str(chosen)
    tags = OmegaConf.select(cfg, "tags", default=None) or []
    return "paper" if "paper" in [str(t) for t in tags] else None


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:OUTPUT_HASH_LEN]


def _stage_files(specs: Iterable[Spec]) -> list[Path]:
    """The stage files among ``specs``' files (answers, pairs, questions, filtered), in a stable order."""
    files = {
        Path(p) for s in specs if s.name in _STAGE_ROLES or s.name.startswith("answers-") for p in s.files.values()
    }
    return sorted(files)


def input_files(cfg: DictConfig, stage: str) -> list[Path]:
    """The stage files a generate stage reads (from its config; missing ones are the stage's own error)."""
    if stage not in OWN:
        return []
    return [p for p in _stage_files(lineage.generate_inputs(cfg, stage)) if p.is_file()]


def _made_with(cfg: DictConfig, own: Sequence[str], inputs: Sequence[Path]) -> dict[str, Any]:
    """The inputs' readable settings, overridden by this run's values of the ones it decides itself (``own``)."""
    made_with: dict[str, Any] = {}
    for path in inputs:
        made_with.update((_read(path).get("provenance") or {}).get("made_with") or {})
    mine = current(cfg)
    made_with.update({name: mine[name] for name in own})
    return made_with


def _listed(inputs: Sequence[Path]) -> list[dict[str, Any]]:
    return [{"path": str(p), "sha1": _digest(p), "fingerprint": _read(p).get("fingerprint")} for p in inputs]


def record_for(cfg: DictConfig, stage: str, inputs: Sequence[Path]) -> dict[str, Any]:
    """The provenance entry of a file ``stage`` wrote from ``inputs`` under ``cfg``."""
    settings = stage_settings(cfg, _DECIDED_AS.get(stage, stage))
    made_with = _made_with(cfg, OWN[stage], inputs)
    return {"stage": stage, "made_with": made_with, "settings": settings, "inputs": _listed(inputs)}


def adapter_record(cfg: DictConfig, pairs: Sequence[Path]) -> dict[str, Any]:
    """The provenance entry of an adapter trained on the pairs files ``pairs`` under ``cfg`` (for its metadata)."""
    files = [p for p in pairs if p.is_file()]
    return {"stage": "train", "made_with": _made_with(cfg, TRAIN_OWN, files), "inputs": _listed(files)}


def written_files(stage: str, summary: Mapping[str, Any]) -> list[Path]:
    """The files a generate stage's summary says it wrote (or found complete and kept)."""
    if stage in ("questions", "filter"):
        return [Path(str(summary["output"]))] if summary.get("output") else []
    if stage == "answers":
        return [Path(str(p)) for p in (summary.get("files") or {}).values()]
    if stage == "merge-answers":
        return [Path(str(p)) for p in summary.get("files") or {}]
    if stage == "pairs":
        folder = Path(str(summary.get("output_dir", "")))
        return [folder / f"{code}.jsonl" for code in summary.get("kept") or {}]
    return []


def record(cfg: DictConfig, stage: str, summary: Mapping[str, Any], inputs: Sequence[Path]) -> None:
    """Add the provenance entry to the sidecar of every file ``stage`` wrote (other sidecar keys stay as they are)."""
    if stage not in OWN:
        return
    entry = record_for(cfg, stage, inputs)
    for path in written_files(stage, summary):
        if path.is_file():
            write_json(sidecar(path), {**_read(path), "provenance": entry})


def differences(made_with: Mapping[str, Any], now: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, this run's value) for every readable setting that differs."""
    return [(k, v, now.get(k)) for k, v in made_with.items() if k in now and str(v) != str(now.get(k))]


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def check_inputs(cfg: DictConfig, files: Sequence[Path], reader: str) -> None:
    """Warn (one line per differing key) when a file ``reader`` reads was made under other deciding settings; under a
    ``paper_*`` experiment that is a one-line error. Files without provenance: one warning for them all."""
    entries = [(_name(p), p, _read(p).get("provenance")) for p in files]
    unknown = check_entries(
        cfg, entries, "files", f"rerun the stage that makes it with this config (or point {reader} at such a file)"
    )
    if unknown:
        log.warning(
            "%d input file(s) of %s carry no provenance (written before it was recorded), so the settings that made "
            "them are unknown: %s",
            len(unknown),
            reader,
            ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else ""),
        )


def check_adapters(cfg: DictConfig, folders: Iterable[Path]) -> None:
    """Evaluation's check of the adapters it loads, as :func:`check_inputs` (an adapter trained on debug pairs warns,
    or stops a ``paper_*`` run); adapters trained before provenance was recorded: one "unknown" warning."""
    entries = []
    for folder in folders:
        meta = _read_json(Path(folder) / lineage.ADAPTER_META_FILE)
        entries.append((f"adapter {folder}", Path(folder) / lineage.ADAPTER_META_FILE, meta.get("provenance")))
    unknown = check_entries(
        cfg, entries, "adapters", "train it again with this config (or point eval.adapter at such an adapter)"
    )
    if unknown:
        log.warning(
            "%d adapter(s) carry no provenance (trained before it was recorded), so the settings that made them are "
            "unknown: %s",
            len(unknown),
            ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else ""),
        )


def check_entries(cfg: DictConfig, entries: Sequence[tuple[str, Path, Any]], what: str, remedy: str) -> list[str]:
    """The one comparison of recorded provenance with this run's settings: for each (name, file, entry), one warning
    per differing key, or under a ``paper_*`` experiment a one-line error naming ``file``. Returns the names whose
    entry is missing (unknown provenance), for the caller's one warning."""
    now = current(cfg)
    unknown: list[str] = []
    for name, path, entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("made_with"), dict):
            unknown.append(name)
            continue
        differ = differences(entry["made_with"], now)
        if not differ:
            continue
        lines = [f"{name} was made with {k}={was}, this run has {k}={has}" for k, was, has in differ]
        preset = experiment(cfg)
        if preset and preset.startswith("paper"):
            raise CultureSPAError(
                f"{path}: {'; '.join(lines)}; a {preset} run reads only {what} made under its own settings: {remedy}"
            )
        for line in lines:
            log.warning("%s", line)
    return unknown


def check_generate(cfg: DictConfig, stage: str) -> list[Path]:
    """A generate stage's input check (before it runs); returns the stage files it reads, for :func:`record`."""
    files = input_files(cfg, stage)
    if str(OmegaConf.select(cfg, "task_name", default="")) != "pipeline":  # the pipeline's folders are keyed by hash
        check_inputs(cfg, files, f"stage={stage}")
    return files


def check_training_pairs(cfg: DictConfig) -> None:
    """Before ``train.py`` runs: a clear line when there are no pairs yet (naming the command that makes them, and
    debug pairs this run does not read), and the provenance check of the pairs it will train on."""
    folder = Path(str(OmegaConf.select(cfg, "sft.pairs_dir")))
    codes = resolve_cultures(OmegaConf.select(cfg, "cultures"))
    files = [folder / f"{code}.jsonl" for code in codes]
    if not any(p.is_file() for p in files):
        raise CultureSPAError(f"{folder}: no pairs yet (sft.pairs_dir){_debug_hint(cfg)}; {_MAKE_PAIRS}")
    check_inputs(cfg, [p for p in files if p.is_file()], "train")


_MAKE_PAIRS = (
    "make them with the questions, filter and answers stages, then `python generate.py stage=pairs cultures=all` "
    "(README, Quickstart), or give sft.pairs_dir=<folder of {CODE}.jsonl>"
)


def _debug_hint(cfg: DictConfig) -> str:
    """Names the debug runs' pairs for this model, which a run without ``debug=`` does not read."""
    if str(OmegaConf.select(cfg, "paths.debug", default="none")) != "none":
        return ""
    root = Path(str(OmegaConf.select(cfg, "paths.root_dir"))) / "outputs" / "debug"
    model = str(OmegaConf.select(cfg, "model.name"))
    found = sorted(p for p in root.glob(f"*/{model}/pairs") if any(p.glob("*.jsonl"))) if root.is_dir() else []
    if not found:
        return ""
    return f" (the pairs in {found[0]} were made by a debug={found[0].parent.parent.name} run: debug files stay there)"
