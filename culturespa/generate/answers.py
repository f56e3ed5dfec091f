"""Stage ``answers`` (step 2): answer a question file culture-unaware, culture-aware or with cross-culture thinking.

One output per (setting, culture): ``unaware.jsonl``, ``aware_{CODE}.jsonl``, ``cct_{CODE}.jsonl`` in
``answers.output_dir``, each holding one Answer record per question in question order. The model is loaded once per
call and reused across cultures. Each file resumes from its part file. Questions go to the engine in fixed chunks of
``answers.resume_chunk`` by position and an unfinished chunk is redone whole, so every answer is computed in the same
batch as in an uninterrupted run: with greedy or logprob decoding a resumed file is bitwise identical (on CPU the
logits of a prompt change in the last bits with its batch partners, so merely skipping done prompts would not be), as
long as the engine settings are unchanged. A finished file whose
fingerprint (model, decoding, templates, setting, culture, CCT cultures, seed) matches and that holds every question
is skipped; answers already in a finished file for unchanged questions are reused when the question set grows.

With ``decoding=sample`` a question is answered several times (``culturespa.generate.noise.sample_runs``: k =
``data.samples`` per aware/cct file, k x (1 + ``data.noise_replicates``) unaware, for the noise floor and the robust
pair criteria): the samples are runs 0, 1, ... of the same file, run-major, each from its own random stream (the
engine seeds a request by (seed, ``id|culture|run``)). Run 0 is exactly the one-sample answer, and more samples later
reuse the finished runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from culturespa.config import first_n
from culturespa.data.jsonl import ResumableJsonl, iter_jsonl
from culturespa.data.questions import Question
from culturespa.data.survey import WVSData
from culturespa.errors import fail
from culturespa.generate import outputs
from culturespa.generate.noise import sample_runs
from culturespa.generate.pool import load_questions
from culturespa.generate.shards import Shard, merge_one, resume_chunk, resume_chunks
from culturespa.generate.track import stage_run
from culturespa.prompts.builder import PromptBuilder, PromptStyle, similar_cultures

log = logging.getLogger("culturespa.generate")
SAMPLE_ROWS = 20


def answers_file(folder: str | Path, setting: str, culture: str | None) -> Path:
    """Contract names: ``unaware.jsonl`` / ``aware_{CODE}.jsonl`` / ``cct_{CODE}.jsonl``."""
    return Path(folder) / ("unaware.jsonl" if setting == "unaware" else f"{setting}_{culture}.jsonl")


def answer_key(record: dict[str, Any]) -> str:
    return f"{record['id']}|{record['culture']}|{record['run']}"


def load_answer_questions(cfg: DictConfig, wvs: WVSData | None) -> list[Question]:
    """``answers.input``: ``wvs`` (the 259 evaluation questions) or a question file/folder; ``answers.limit``."""
    source = str(cfg.answers.input)
    if source == "wvs":
        questions = list((wvs or WVSData.load(cfg.paths.wvs_dir)).eval_questions)
    else:
        questions = load_questions(source)
    if not questions:
        raise fail(source, "no questions to answer")
    return first_n(questions, cfg, "answers.limit")


def to_record(res: Any, question: Question, setting: str, culture: str | None, run: int = 0) -> dict[str, Any]:
    dist = None if res.distribution is None else {str(k): float(v) for k, v in res.distribution.items()}
    return {
        "id": question.id,
        "culture": culture,
        "setting": setting,
        "run": run,
        "raw": res.text,
        "answer": res.answer,
        "valid": bool(res.valid),
        "distribution": dist,
        "question": question.to_record(),
    }


def _reuse_finished(store: ResumableJsonl, path: Path, current: dict[str, dict[str, Any]]) -> int:
    """Copy answers of unchanged questions from an earlier finished file of the same config into the part file."""
    if not path.is_file():
        return 0
    reused = [
        r
        for _, r in iter_jsonl(path)
        if answer_key(r) not in store.records and current.get(answer_key(r)) == r.get("question")
    ]
    store.append_many(reused)
    return len(reused)


def run_answers(cfg: DictConfig, cultures: list[str], merge: bool = False) -> dict[str, Any]:
    """Answer the questions (``answers.shard=i/n``: one shard of them); ``merge``: join the finished shards instead."""
    acfg = cfg.answers
    shard = Shard.from_config(cfg)
    setting = str(acfg.setting)
    from culturespa.infer.engine import Decoding

    decoding = Decoding.from_config(cfg.decoding)
    n_similar = int(OmegaConf.select(cfg, "answers.n_similar", default=3))
    chunk = resume_chunk(cfg)
    builder = PromptBuilder(PromptStyle.from_config(cfg.templates, cfg.prompt))
    need_wvs = setting == "cct" or str(acfg.input) == "wvs"
    wvs = WVSData.load(cfg.paths.wvs_dir) if need_wvs else None
    questions = load_answer_questions(cfg, wvs)
    targets: list[str | None] = [None] if setting == "unaware" else list(cultures)
    runs = sample_runs(cfg, setting)  # k samples (x (1 + noise replicates) unaware) per question when sampling
    similar = {c: similar_cultures(wvs, c, n_similar) for c in targets if setting == "cct" and c is not None}
    builder.system_prompt(setting, targets[0], *similar.get(targets[0], ((), ())))  # template errors before loading

    folder = Path(str(acfg.output_dir))
    base = {
        "model": outputs.plain(cfg, "model"),
        "decoding": outputs.plain(cfg, "decoding"),
        "templates": outputs.plain(cfg, "templates.answer"),
        "seed": int(cfg.seed),
        "setting": setting,
    }
    plans, merged = [], []
    for culture in targets:
        path = answers_file(folder, setting, culture)
        fp = outputs.fingerprint({**base, "culture": culture, "similar": similar.get(culture)})
        keys = {f"{q.id}|{culture}|{r}": q.to_record() for r in range(runs) for q in questions}  # run-major
        if merge:  # stage=merge-answers: the shards of this file, checked and joined (shards.py)
            merged.append(merge_one(path, fp, keys, chunk, outputs.overwrite_requested(cfg), len(questions)))
            continue
        if shard is not None:  # answers.shard=i/n: its own file, fingerprint and share of the questions
            path, fp, keys = shard.restrict(path, fp, keys, chunk, len(questions))
        action = outputs.prepare(path, fp, outputs.overwrite_requested(cfg))
        if action == "skip" and {answer_key(r) for _, r in iter_jsonl(path)} != set(keys):
            action = "extend"
        if action != "skip" and path.is_file() and not outputs.overwrite_requested(cfg):
            how = "set answers.output_dir=<another folder> for this question set, or overwrite=true to replace it"
            outputs.refuse_shrink(path, {answer_key(r) for _, r in iter_jsonl(path)}, set(keys), how)
        plans.append((culture, path, fp, keys, action))
    if merge:
        return {"stage": "merge-answers", "setting": setting, "files": {m["file"]: m for m in merged}}
    todo = [p for p in plans if p[4] != "skip"]
    for culture, path, *_ in plans:
        if (culture, path) not in {(p[0], p[1]) for p in todo}:
            log.info("answers: %s is complete for this config; skipping (overwrite=true redoes it)", path)
    summary: dict[str, Any] = {"stage": "answers", "setting": setting, "files": {}, "invalid": {}, "skipped": []}
    summary["skipped"] = [str(p[1]) for p in plans if p[4] == "skip"]
    if not todo:
        summary["files"] = {p[0] or "unaware": str(p[1]) for p in plans}
        return summary

    from culturespa.infer.engine import Engine, Request

    engine = Engine.from_config(cfg)
    with stage_run(cfg, "answers") as run:
        samples: list[list[Any]] = []
        answered, started = 0, time.perf_counter()
        for culture, path, fp, keys, action in plans:
            label = culture or "unaware"
            summary["files"][label] = str(path)
            if action == "skip":
                continue
            outputs.mark(path, fp, complete=False)
            store = ResumableJsonl(path, key=answer_key)
            if store.dropped_torn_line:
                log.warning("answers: dropped a torn last line from %s (killed run)", store.part)
            for key in [k for k, r in store.records.items() if keys.get(k) not in (None, r.get("question"))]:
                del store.records[key]  # the question changed since: answer it again (the new line wins on resume)
            reused = _reuse_finished(store, path, keys) if action == "extend" else 0
            by_key = {k: Question.from_record(q) for k, q in keys.items()}
            similar_, dissimilar = similar.get(culture, ((), ()))
            order = list(keys)
            todo_keys = [k for k in order if k not in store.records]
            log.info(
                "answers: %s: %d to answer, %d resumed, %d reused",
                path.name,
                len(todo_keys),
                len(store.records) - reused,
                reused,
            )
            bar = tqdm(total=len(order), initial=len(order) - len(todo_keys), desc=f"answers {label}", unit="q")
            full_order = [f"{q.id}|{culture}|{r}" for r in range(runs) for q in questions]
            try:
                for chunk_keys in resume_chunks(full_order, chunk, len(questions)):
                    # fixed chunks by question position within each run (sample): a resumed chunk is recomputed
                    # whole, in the same batches as in an uninterrupted run, so its answers are bitwise the same
                    # (logprob/greedy); a shard holds whole chunks of the unsharded run
                    members = [k for k in chunk_keys if k in keys]
                    if all(k in store.records for k in members):
                        continue
                    requests = [
                        Request(
                            k,
                            builder.answer_messages(by_key[k], setting, culture, similar_, dissimilar),
                            by_key[k].numbers,
                        )
                        for k in members
                    ]
                    for results in engine.answer(requests, decoding, seed=int(cfg.seed)):
                        new = [r for r in results if r.key not in store.records]
                        store.append_many(
                            to_record(r, by_key[r.key], setting, culture, int(r.key.rsplit("|", 1)[1])) for r in new
                        )
                        answered += len(new)
                        bar.update(len(new))
                        for r in results[: max(0, SAMPLE_ROWS - len(samples))]:
                            samples.append([label, r.key, r.prompt, r.text, r.answer, r.valid])
            finally:
                bar.close()
                store.close()
            final = store.finish(order=list(keys))
            outputs.mark(path, fp, complete=True, n=len(final), decoding=decoding.mode, runs=runs)
            invalid = sum(not r["valid"] for r in final)
            summary["invalid"][label] = invalid
            log.info("answers: %s: %d answers, %d invalid", path, len(final), invalid)
        elapsed = time.perf_counter() - started
        run.table("answers/samples", ["culture", "key", "prompt", "raw", "parsed", "valid"], samples)
        run.summary(
            {
                **{f"invalid/{k}": v for k, v in summary["invalid"].items()},
                "answered": answered,
                "answers_per_s": answered / elapsed if elapsed else None,
                "setting": setting,
            }
        )
    summary["answered"] = answered
    summary["answers_per_s"] = answered / elapsed if elapsed else None
    return summary
