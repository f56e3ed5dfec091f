"""Stage ``answers`` (step 2): answer a question file culture-unaware, culture-aware or with cross-culture thinking.

One output per (setting, culture): ``unaware.jsonl``, ``aware_{CODE}.jsonl``, ``cct_{CODE}.jsonl`` in
``answers.output_dir``, each holding one answer record (``answers/records.py``) per question in question order.
The model is loaded once per call and reused across cultures. Each file is filled by the shared answer loop
(``answers/loop.py``): it resumes from its part file in fixed chunks of ``answers.resume_chunk`` questions, so with
greedy or logprob decoding a resumed file is bitwise identical to an uninterrupted one. A finished file whose
fingerprint (model, decoding, templates, setting, culture, CCT cultures, seed) matches and that holds every question
is skipped; answers already in a finished file for unchanged questions are reused when the question set grows.
The stage plans (settings, questions, each file's action; no model loaded), runs the loop on what is left, then
records samples and figures in W&B; ``answers.shard=i/n`` and ``stage=merge-answers``: ``answers/shards.py``.
``engine.devices=N`` (``infer/workers.py``): the files still to do are answered as N shards by N worker processes
at once, one per device, then merged (byte for byte the one-process files with greedy or logprob decoding).

With ``decoding=sample`` a question is answered several times (``AnswersStageSettings.runs``: k =
``data.samples`` per aware/cct file, k x (1 + ``data.noise_replicates``) unaware, for the noise floor and the robust
pair criteria): the samples are runs 0, 1, ... of the same file, run-major, each from its own random stream (the
engine seeds a request by (seed, ``id|culture|run``)). Run 0 is exactly the one-sample answer, and more samples later
reuse the finished runs. The stage reads its settings once (``answers_settings.py``); the parts that need the
composed config itself (engine, W&B run, a worker's config) come bound to it (``stages/runtime.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from culturespa.answers.answers_settings import AnswersStageSettings
from culturespa.answers.loop import AnswerFile, Messages, fill
from culturespa.answers.merge import merge_one, shard_fingerprint
from culturespa.answers.records import answer_key
from culturespa.answers.shards import Shard
from culturespa.config import validate_config
from culturespa.errors import CultureSPAError, fail
from culturespa.infer.workers import Job, run_jobs
from culturespa.prompts.builder import PromptBuilder, PromptStyle, similar_cultures
from culturespa.questions.pool import load_questions
from culturespa.stages import outputs
from culturespa.stages.identity import fingerprint
from culturespa.stages.runtime import StageRuntime
from culturespa.stages.tracking import StageRun
from culturespa.utils.jsonl import iter_jsonl
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData

if TYPE_CHECKING:  # the engine pulls in torch; it is imported when the stage starts answering
    from culturespa.infer.engine import Decoding, Engine, Result

log = logging.getLogger("culturespa.generate")
SAMPLE_ROWS = 20


def answers_file(folder: str | Path, setting: str, culture: str | None) -> Path:
    """Contract names: ``unaware.jsonl`` / ``aware_{CODE}.jsonl`` / ``cct_{CODE}.jsonl``."""
    return Path(folder) / ("unaware.jsonl" if setting == "unaware" else f"{setting}_{culture}.jsonl")


def load_answer_questions(settings: AnswersStageSettings, wvs: WVSData | None) -> list[Question]:
    """``answers.input``: ``wvs`` (the 259 evaluation questions) or a question file/folder; ``answers.limit``."""
    source, limit = str(settings.answers.input), settings.answers.limit
    if source == "wvs":
        questions = list((wvs or WVSData.load(settings.wvs_dir)).eval_questions)
    else:
        questions = load_questions(source)
    if not questions:
        raise fail(source, "no questions to answer")
    return questions if limit is None else questions[:limit]


@dataclass(frozen=True)
class FilePlan:
    """One output of the stage: the file to fill, its fingerprint, its records' keys and what to do with it."""

    file: AnswerFile
    fingerprint: str
    keys: dict[str, dict[str, Any]]
    action: str  # skip | resume | fresh | extend (a finished file of this config lacks some keys) | merge

    @property
    def label(self) -> str:
        return self.file.culture or "unaware"


@dataclass(frozen=True)
class AnswersPlan:
    """Everything the stage decided before loading a model."""

    setting: str
    decoding: Decoding
    runs: int  # samples per question (runs 0..runs-1)
    files: list[FilePlan]

    @property
    def todo(self) -> list[FilePlan]:
        return [f for f in self.files if f.action not in ("skip", "merge")]


@dataclass
class Answered:
    """What the run did: invalid answers per file, new answers, sample rows for W&B and the time it took."""

    invalid: dict[str, int] = field(default_factory=dict)
    answered: int = 0
    samples: list[list[Any]] = field(default_factory=list)
    elapsed: float = 0.0

    def keep_samples(self, label: str, results: list[Result]) -> None:
        for r in results[: max(0, SAMPLE_ROWS - len(self.samples))]:
            self.samples.append([label, r.key, r.prompt, r.text, r.answer, r.valid])

    @property
    def per_second(self) -> float | None:
        return self.answered / self.elapsed if self.elapsed else None


def run_answers(settings: AnswersStageSettings, cultures: list[str], runtime: StageRuntime) -> dict[str, Any]:
    """Answer the questions (``answers.shard=i/n``: one shard of them; ``settings.merge``: join the finished shards
    instead); ``runtime``: the engine, W&B run and workers' configs, bound to the composed config by the entry point."""
    shard, devices, merge = settings.shard, list(settings.devices), settings.merge
    if devices and shard is not None:
        raise CultureSPAError(
            f"engine.devices={len(devices)} with answers.shard={shard.label}: the stage splits itself over the "
            "devices; leave answers.shard unset, or set engine.devices=1 to answer one shard"
        )
    plan = plan_answers(settings, cultures, None if merge else shard, merge)
    if merge:  # stage=merge-answers: the shards of each file, checked and joined (merge_answers.py)
        chunk, overwrite = settings.chunk, settings.overwrite
        merged = [
            merge_one(p.file.path, p.fingerprint, p.keys, chunk, overwrite, len(p.file.questions)) for p in plan.files
        ]
        return {"stage": "merge-answers", "setting": plan.setting, "files": {m["file"]: m for m in merged}}
    for skipped in (p for p in plan.files if p.action == "skip"):
        log.info("answers: %s is complete for this config; skipping (overwrite=true redoes it)", skipped.file.path)
    summary: dict[str, Any] = {"stage": "answers", "setting": plan.setting, "files": {}, "invalid": {}}
    summary["skipped"] = [str(p.file.path) for p in plan.files if p.action == "skip"]
    summary["files"] = {p.label: str(p.file.path) for p in plan.files}
    if not plan.todo:
        return summary
    if devices:  # engine.devices=N: N worker processes, one shard each, then merged
        return summary | answer_on_devices(settings, runtime, plan, devices)
    engine = runtime.engine()  # torch: heavy, loaded only when there is something to answer
    with runtime.track() as run:
        done = answer_planned(engine, plan)
        record_answers(run, plan, done)
    return summary | {"invalid": done.invalid, "answered": done.answered, "answers_per_s": done.per_second}


def plan_answers(
    settings: AnswersStageSettings, cultures: list[str], shard: Shard | None, merge: bool = False
) -> AnswersPlan:
    """Check the settings and templates, load the questions and decide each file's action (``merge``: leave that to
    the merge); no model is loaded."""
    from culturespa.infer.engine import Decoding  # torch: heavy; checking the decoding settings needs it

    setting, seed = settings.setting, settings.seed
    decoding = Decoding.from_config(settings.decoding)
    chunk, overwrite = settings.chunk, settings.overwrite
    builder = PromptBuilder(PromptStyle.from_config(settings.templates, settings.prompt))
    wvs = WVSData.load(settings.wvs_dir) if setting == "cct" or str(settings.answers.input) == "wvs" else None
    questions = load_answer_questions(settings, wvs)
    targets: list[str | None] = [None] if setting == "unaware" else list(cultures)
    runs = settings.runs(setting)  # k samples (x (1 + noise replicates) unaware) per question when sampling
    n_similar = int(settings.answers.n_similar)
    similar = {c: similar_cultures(wvs, c, n_similar) for c in targets if setting == "cct" and c is not None}
    builder.system_prompt(setting, targets[0], *similar.get(targets[0], ((), ())))  # template errors before loading
    base = {**settings.identity, "setting": setting}
    files = []
    for culture in targets:
        near, far = similar.get(culture, ((), ()))
        fp = fingerprint({**base, "culture": culture, "similar": similar.get(culture)})
        path = answers_file(str(settings.answers.output_dir), setting, culture)
        if shard is not None:  # answers.shard=i/n: its own file, fingerprint and share of the questions
            path, fp = shard.path(path), shard_fingerprint(shard, fp, chunk)
        asker = _asker(builder, setting, culture, near, far)
        file = AnswerFile(path, setting, culture, questions, asker, runs=runs, chunk=chunk, shard=shard, seed=seed)
        keys = file.keys()
        files.append(FilePlan(file, fp, keys, "merge" if merge else _action(path, fp, set(keys), overwrite)))
    return AnswersPlan(setting, decoding, runs, files)


def _asker(builder: PromptBuilder, setting: str, culture: str | None, near: Any, far: Any) -> Messages:
    """The messages that ask one question in ``setting`` for ``culture`` (``near``/``far``: CCT's culture lists)."""
    return lambda question: builder.answer_messages(question, setting, culture, near, far)


def _action(path: Path, fp: str, keys: set[str], overwrite: bool) -> str:
    """skip / resume / fresh (``outputs.prepare``), or extend: a finished file of this config that lacks some keys.
    A finished file is never replaced by one that drops some of its answers."""
    action = outputs.prepare(path, fp, overwrite)
    if action == "skip" and {answer_key(r) for _, r in iter_jsonl(path)} != keys:
        action = "extend"
    if action != "skip" and path.is_file() and not overwrite:
        how = "set answers.output_dir=<another folder> for this question set, or overwrite=true to replace it"
        outputs.refuse_shrink(path, {answer_key(r) for _, r in iter_jsonl(path)}, keys, how)
    return action


def answer_planned(engine: Engine, plan: AnswersPlan) -> Answered:
    """Fill every file that is not skipped, marking each unfinished, then finished, in its sidecar."""
    done, started = Answered(), time.perf_counter()
    for todo in plan.todo:
        path = todo.file.path
        outputs.mark(path, todo.fingerprint, complete=False)
        filled = fill(
            engine,
            plan.decoding,
            todo.file,
            reuse_finished=todo.action == "extend",
            on_results=lambda results, label=todo.label: done.keep_samples(label, results),
        )
        outputs.mark(
            path, todo.fingerprint, complete=True, n=len(filled.records), decoding=plan.decoding.mode, runs=plan.runs
        )
        done.invalid[todo.label] = sum(not r["valid"] for r in filled.records)
        done.answered += filled.answered
        log.info("answers: %s: %d answers, %d invalid", path, len(filled.records), done.invalid[todo.label])
    done.elapsed = time.perf_counter() - started
    return done


def answer_on_devices(
    settings: AnswersStageSettings, runtime: StageRuntime, plan: AnswersPlan, devices: list[str]
) -> dict[str, Any]:
    """The files still to do as one shard per device, answered by worker processes at once, then merged; a rerun
    after a crash resumes every shard from its own part file. Each worker re-enters the stage with a copy of the
    composed config (``runtime.worker_config``) that names its shard."""
    n, todo = len(devices), plan.todo
    cultures = [p.file.culture for p in todo if p.file.culture is not None]
    folder = settings.workers_dir or plan.files[0].file.path.parent
    jobs = [
        Job(
            f"answers shard {i}/{n}",
            answer_shard,
            runtime.worker_config({"answers.shard": Shard(i, n).label}),
            folder / "workers" / f"answers-{plan.setting}.shard-{i}-of-{n}.log",
            (cultures,),
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    shards = run_jobs(jobs, devices)
    elapsed = time.perf_counter() - started
    chunk, overwrite = settings.chunk, settings.overwrite
    for p in todo:
        merge_one(p.file.path, p.fingerprint, p.keys, chunk, overwrite, len(p.file.questions))
    answered = sum(int(s.get("answered") or 0) for s in shards)
    invalid = {p.label: sum(not r["valid"] for _, r in iter_jsonl(p.file.path)) for p in todo}
    log.info("answers: %d answers by %d workers in %.1f s", answered, n, elapsed)
    return {"invalid": invalid, "answered": answered, "answers_per_s": answered / elapsed, "workers": n}


def answer_shard(cfg: DictConfig, cultures: list[str] | None = None) -> dict[str, Any]:
    """A worker's job: the answers stage for its ``answers.shard`` (``cultures``: only those still to do). A worker
    process starts from the pickled config, so it is an entry point: it reads the settings and binds the runtime."""
    cultures = validate_config(cfg) if cultures is None else cultures
    return run_answers(AnswersStageSettings.from_config(cfg), cultures, StageRuntime.bind(cfg, "answers"))


def record_answers(run: StageRun, plan: AnswersPlan, done: Answered) -> None:
    """The W&B record of the stage: sample replies and the summary figures."""
    run.table("answers/samples", ["culture", "key", "prompt", "raw", "parsed", "valid"], done.samples)
    run.summary(
        {
            **{f"invalid/{k}": v for k, v in done.invalid.items()},
            "answered": done.answered,
            "answers_per_s": done.per_second,
            "setting": plan.setting,
        }
    )
