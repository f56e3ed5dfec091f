"""Ask the model (base, joint adapter or specific adapters) the WVS questions for each culture, resumably.

Answers are appended to ``<output_dir>/answers/{setting}_{CODE}.jsonl`` (or ``{setting}.jsonl`` when the prompt does
not depend on the culture: the model is then asked once and scored against every culture) by the answer loop the
answers stage uses (``answers/loop.py``: the same records, resume chunks and part files); an interrupted evaluation skips
what is already there. A fingerprint of the settings that shape the answers is kept beside them, so answers made under
other settings are never mixed in. ``engine.devices=N`` (``infer/workers.py``): the files still to do are answered
as N shards by N worker processes at once, one per device, then joined in the one-process order.

Answering reads typed settings (:class:`~culturespa.evaluate.evaluate_settings.AnsweringSettings`); the composed config
itself (``cfg``) goes only where it is read by design: ``Engine.from_config`` and the workers' shard configs.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from culturespa.answers.loop import AnswerFile, Messages, fill
from culturespa.answers.records import AnswerRecord
from culturespa.answers.shards import Shard, finished_answers, join_shards
from culturespa.errors import fail
from culturespa.evaluate.adapters import AdapterPlan, activate, quantised
from culturespa.evaluate.evaluate_settings import AnsweringSettings
from culturespa.evaluate.prompting import adapter_style, answer_messages, culture_independent
from culturespa.infer.workers import Job, run_jobs
from culturespa.utils.jsonl import iter_jsonl
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"


def check_fingerprint(settings: AnsweringSettings, folder: Path) -> None:
    """Refuse to resume into answers made with other settings (another prompt, model, adapter or decoding)."""
    path = folder / FINGERPRINT_FILE
    current = settings.fingerprint
    has_answers = any(folder.glob("*.jsonl")) or any(folder.glob("*.jsonl.part"))
    if path.is_file() and has_answers:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            saved = {}
        if saved.get("hash") != current["hash"]:
            raise fail(
                folder,
                "holds answers made with other settings (model/adapter/prompt/decoding/seed); "
                "use another eval.output_dir or delete that folder",
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, default=str) + "\n", encoding="utf-8")


def _load_model(settings: AnsweringSettings) -> tuple[Any, Any]:
    from culturespa.models.loader import ModelSpec, load_model, load_tokenizer  # torch: heavy

    spec = ModelSpec.from_config(settings.model)
    model = load_model(
        spec,
        settings.cache_dir,
        settings.quantization,
        compute_dtype=settings.compute_dtype,
        double_quant=settings.double_quant,
        device=settings.device,
    )
    return model, load_tokenizer(spec, settings.cache_dir)


def answer_with_model(
    settings: AnsweringSettings,
    cfg: DictConfig,
    wvs: WVSData,
    questions: Sequence[Question],
    cultures: Sequence[str],
    plan: AdapterPlan,
    shard: Shard | None = None,
) -> dict[str | None, list[AnswerRecord]]:
    """Answers per culture code, or under the key None when one culture-independent set serves every culture.
    ``cfg``: the composed config, for ``Engine.from_config`` and the workers; ``shard``: a worker's share only, into
    its shard files (``engine.devices``)."""
    from culturespa.infer.engine import Decoding, Engine  # torch: heavy, loaded only when evaluating a model

    folder = settings.output_dir / "answers"
    check_fingerprint(settings, folder)
    if settings.devices and shard is None:
        return answer_on_devices(settings, cfg, wvs, questions, cultures, plan)
    decoding = Decoding.from_config(settings.decoding)
    file = _file_maker(settings, questions, shard)

    base, tokenizer = _load_model(settings)
    model = base
    if plan.kind == "joint":
        model = activate(base, base, Path(str(plan.folder_for(None))), "joint", shared_base=False)

    shared_style = _shared_style(settings, plan)
    if shared_style is not None:
        engine = Engine.from_config(cfg, model=model, tokenizer=tokenizer)
        shared = file(path=_path(folder, settings, None, shard), culture=None, messages=_asker(wvs, shared_style, None))
        return {None: fill(engine, decoding, shared, reuse_finished=True).records}

    answers: dict[str | None, list[AnswerRecord]] = {}
    for culture in cultures:
        if plan.kind == "specific":
            if not quantised(base):
                model = None  # the previous culture's merged copy (also held by its engine) is not needed now
            model = activate(model, base, Path(str(plan.folder_for(culture))), culture, shared_base=True)
        style = adapter_style(settings.style, plan.style_for(culture))
        engine = Engine.from_config(cfg, model=model, tokenizer=tokenizer)
        own = file(path=_path(folder, settings, culture, shard), culture=culture, messages=_asker(wvs, style, culture))
        answers[culture] = fill(engine, decoding, own, reuse_finished=True).records
    return answers


def _file_maker(
    settings: AnsweringSettings, questions: Sequence[Question], shard: Shard | None
) -> functools.partial[AnswerFile]:
    """The answers stage's chunking; run r samples with seed + r * decoding.seed_step (Decoding.run_seed); the
    folder's fingerprint vouches for finished files."""
    return functools.partial(
        AnswerFile,
        setting=settings.prompt_name,
        questions=questions,
        runs=settings.runs,
        chunk=settings.chunk,
        shard=shard,
        seed=settings.seed,
        seed_step=settings.seed_step,
    )


def _shared_style(settings: AnsweringSettings, plan: AdapterPlan) -> Any:
    """The prompt style when one culture-independent answer set serves every culture, else None."""
    style = adapter_style(settings.style, plan.style_for(None)) if plan.kind != "specific" else None
    return style if style is not None and culture_independent(style) else None


def _path(folder: Path, settings: AnsweringSettings, culture: str | None, shard: Shard | None) -> Path:
    setting = settings.prompt_name
    path = folder / (f"{setting}.jsonl" if culture is None else f"{setting}_{culture}.jsonl")
    return shard.path(path) if shard is not None else path


def answer_on_devices(
    settings: AnsweringSettings,
    cfg: DictConfig,
    wvs: WVSData,
    questions: Sequence[Question],
    cultures: Sequence[str],
    plan: AdapterPlan,
) -> dict[str | None, list[AnswerRecord]]:
    """The files still to do as one shard per device (``settings.devices``), answered by worker processes at once
    (each from ``cfg``, pinned to its device), then joined; finished files are read as they are, and a rerun after a
    crash resumes every shard from its own part file."""
    folder, n = settings.output_dir / "answers", len(settings.devices)
    targets: list[str | None] = [None] if _shared_style(settings, plan) is not None else list(cultures)
    file = _file_maker(settings, questions, None)
    paths = {c: _path(folder, settings, c, None) for c in targets}
    keys = {c: file(path=paths[c], culture=c, messages=_asker(wvs, None, c)).keys() for c in targets}
    todo = [c for c in targets if not finished_answers(paths[c], keys[c])]
    if todo:
        named = [c for c in todo if c is not None] or list(cultures)
        logs = settings.output_dir / "workers"
        jobs = [
            Job(
                f"evaluation shard {i}/{n}",
                answer_shard,
                cfg,
                logs / f"eval.shard-{i}-of-{n}.log",
                (questions, named, plan, Shard(i, n)),
            )
            for i in range(n)
        ]
        run_jobs(jobs, list(settings.devices))
        for c in todo:
            join_shards(paths[c], keys[c], n, settings.chunk, len(questions))
    return {c: [r for _, r in iter_jsonl(paths[c])] for c in targets}  # type: ignore[misc]


def answer_shard(
    cfg: DictConfig, questions: Sequence[Question], cultures: Sequence[str], plan: AdapterPlan, shard: Shard
) -> dict[str, Any]:
    """A worker's job: evaluation answering of its shard of every file still to do (its settings read from its
    shard's config)."""
    settings = AnsweringSettings.from_config(cfg, worker=True)
    wvs = WVSData.load(settings.wvs_dir)
    done = answer_with_model(settings, cfg, wvs, questions, cultures, plan, shard)
    return {"shard": shard.label, "answers": sum(len(records) for records in done.values())}


def _asker(wvs: WVSData, style: Any, culture: str | None) -> Messages:
    """The messages that ask one WVS question in the evaluation prompt ``style`` for ``culture``."""
    return lambda question: answer_messages(wvs, style, question, culture)
