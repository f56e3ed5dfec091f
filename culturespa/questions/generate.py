"""Stage ``questions``: self-instruct generation of new survey questions per WVS topic (step 1 of CultureSPA).

Slot ``n`` of topic ``t`` becomes question ``gen-t{t}-{n}``. A prompt shows ``n_examples`` examples: ``n_generated``
questions already generated for the topic and real WVS questions of the topic for the rest, shuffled; the choice is
seeded from (seed, topic, slot, attempt). A reply without a usable JSON question is retried (next attempt) up to
``max_retries`` times; a slot that still fails is recorded as failed, so a rerun does not retry it forever.

Work proceeds in steps; each step asks the next open slots of every topic together. ``questions.exposure`` decides
how many: ``sequential`` (the paper's loop) asks one slot per topic, so every question sees all the questions
generated before it in its topic; ``waves`` asks up to ``questions.batch_size`` slots per topic, faster, but a wave
sees only questions finished before it (the first wave none). ``questions.accept`` decides which replies count:
``strict`` (the paper's) only a reply that is one JSON object as a whole, ``lenient`` also JSON inside fences or
prose, with light repairs (see json_extract.py).

Resume equals an uninterrupted run: every outcome is appended to ``<output>.part`` as a whole line as soon as it is
known (a finished slot, a failed slot, and also each retried attempt as a ``{"id": "gen-t0-3#a0", "retry": true}``
line). A rerun replays the step loop from the start: requests whose outcome is in the part file are not sent to the
model, so every step, every slot's attempt counter and every set of examples a slot sees are rebuilt exactly as the
uninterrupted run had them, and only the attempts that never finished are asked again.

The stage reads its settings once (``QuestionsStageSettings``); the engine and the W&B run, which need the composed
config itself, come bound to it (``stages/runtime.py``).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturespa.prompts.builder import PromptBuilder, PromptStyle
from culturespa.questions.json_extract import Extracted, extract_question, strict_question
from culturespa.questions.progress import ReplyBar
from culturespa.questions.settings import Attempt, QuestionsStageSettings, Settings, question_id
from culturespa.stages import outputs
from culturespa.stages.runtime import StageRuntime
from culturespa.utils.jsonl import ResumableJsonl, read_jsonl, refuse_fewer
from culturespa.wvs.questions import Question
from culturespa.wvs.survey import WVSData
from culturespa.wvs.topics import TOPIC_NAMES

log = logging.getLogger("culturespa.generate")
SAMPLE_ROWS = 50
CARRIED = "#carried"  # part-file line naming the slots taken over from a finished file (grown per_topic)


def pick_examples(
    real: list[Question], generated: list[Question], n_examples: int, n_generated: int, rng: random.Random
) -> list[Question]:
    """``n_generated`` generated examples (fewer while fewer exist), real ones for the rest, shuffled."""
    gen = rng.sample(generated, min(n_generated, len(generated)))
    chosen = gen + rng.sample(real, min(n_examples - len(gen), len(real)))
    rng.shuffle(chosen)
    return chosen


def _record(settings: Settings, attempt: Attempt, got: Extracted, examples: list[Question], raw: str) -> dict[str, Any]:
    question = Question(
        id=attempt.question_id,
        text=got.question,
        options=tuple(got.options),
        first_option=1,
        topic=TOPIC_NAMES[attempt.topic],
        source="generated",
        meta={
            "topic_index": attempt.topic,
            "examples": [q.id for q in examples],
            "attempts": attempt.number + 1,
            "seed": settings.seed,
            "model": settings.model,
            "raw": raw,
        },
    )
    return question.to_record()


def _finished_slots(output: Path) -> dict[str, dict[str, Any]]:
    """Slots resolved by a finished run: its questions, plus the failed slots recorded in the sidecar."""
    slots = {r["id"]: r for r in read_jsonl(output)}
    for marker in outputs.read_meta(output).get("failed", []):
        if isinstance(marker, dict) and "id" in marker:
            slots.setdefault(marker["id"], marker)
    return slots


@dataclass
class Pending:
    """An attempt to ask: its request and the examples its prompt shows."""

    attempt: Attempt
    examples: list[Question]
    request: Any  # culturespa.infer.engine.Request (imported with the engine, which loads torch)


@dataclass
class Progress:
    """What the step loop decides with, rebuilt by replaying the part file on resume, and what it counted."""

    resolved: dict[str, dict[str, Any]]  # question id -> its finished or failed record
    attempts: dict[str, int] = field(default_factory=dict)  # question id -> next attempt number
    questions: dict[str, Question] = field(default_factory=dict)  # parsed resolved records (cache)
    samples: list[list[Any]] = field(default_factory=list)
    new_replies: int = 0
    replayed: int = 0

    def generated(self, settings: Settings, topic: int) -> list[Question]:
        """The topic's questions generated so far, in slot order."""
        out = []
        for key in settings.slot_ids(topic):
            if key in self.resolved and not self.resolved[key].get("failed"):
                if key not in self.questions:
                    self.questions[key] = Question.from_record(self.resolved[key])
                out.append(self.questions[key])
        return out


def plan_step(
    settings: Settings, progress: Progress, real: dict[int, list[Question]], builder: PromptBuilder, prefix: str
) -> list[Pending]:
    """The next open slots of every topic (one each when sequential), each with the examples its prompt shows."""
    from culturespa.infer.engine import Request  # the engine module loads torch; only needed once a model runs

    step: list[Pending] = []
    for t in settings.topics:
        open_slots = [n for n in range(settings.per_topic) if question_id(t, n) not in progress.resolved]
        generated = progress.generated(settings, t)
        for n in open_slots[: settings.slots_per_step]:
            attempt = Attempt(t, n, progress.attempts.get(question_id(t, n), 0))
            rng = random.Random(f"{settings.seed}|{t}|{n}|{attempt.number}")
            examples = pick_examples(real[t], generated, settings.n_examples, settings.n_generated, rng)
            messages = builder.question_generation_messages(TOPIC_NAMES[t], examples)
            step.append(Pending(attempt, examples, Request(attempt.key, messages, prefix=prefix)))
    return step


def replay(step: list[Pending], store: ResumableJsonl, progress: Progress) -> list[Pending]:
    """Outcomes an interrupted run already recorded are taken from the part file; the rest is returned to ask."""
    todo = []
    for pending in step:
        attempt = pending.attempt
        if attempt.key in store.records:  # a recorded retry
            progress.attempts[attempt.question_id] = attempt.number + 1
            progress.replayed += 1
        elif attempt.question_id in store.records:  # a recorded question or failed slot
            progress.resolved[attempt.question_id] = store.records[attempt.question_id]
            progress.replayed += 1
        else:
            todo.append(pending)
    return todo


def parse_reply(accept: str, reply: str) -> Extracted | str:
    """The question in a reply under ``questions.accept``, or a short reason why there is none."""
    return strict_question(reply) if accept == "strict" else extract_question(reply)


def record_reply(settings: Settings, pending: Pending, reply: str, prompt: str, progress: Progress) -> dict[str, Any]:
    """Judge one reply; returns the part-file line of its outcome (question, failed slot, or retry)."""
    attempt, qid = pending.attempt, pending.attempt.question_id
    got = parse_reply(settings.accept, reply)
    progress.new_replies += 1
    if len(progress.samples) < SAMPLE_ROWS:
        parsed = got.__dict__ if isinstance(got, Extracted) else f"bad JSON: {got}"
        progress.samples.append([qid, attempt.number, prompt, reply, parsed])
    if isinstance(got, Extracted):
        progress.resolved[qid] = _record(settings, attempt, got, pending.examples, reply)
        return progress.resolved[qid]
    if attempt.number + 1 > settings.max_retries:
        failed = {"id": qid, "failed": True, "attempts": attempt.number + 1, "reason": got, "raw": reply}
        progress.resolved[qid] = failed
        return failed
    progress.attempts[qid] = attempt.number + 1
    return {"id": attempt.key, "retry": True, "reason": got}


def run_steps(plan: Plan, engine: Any, store: ResumableJsonl, progress: Progress, bar: ReplyBar) -> None:
    """Plan, replay and ask steps until every slot is resolved; each outcome is appended as soon as it is known."""
    settings = plan.settings
    while step := plan_step(settings, progress, plan.real, plan.builder, plan.prefix):
        todo = {p.attempt.key: p for p in replay(step, store, progress)}
        if not todo:
            continue
        batches = engine.generate(
            [p.request for p in todo.values()],
            settings.temperature,
            settings.top_p,
            settings.max_new_tokens,
            seed=settings.seed,
            desc="questions: step",
            top_k=settings.top_k,
        )
        for results in batches:
            lines = []
            for res in results:
                pending = todo[res.key]
                # the reply as the model wrote it: started by the response prefix
                line = record_reply(settings, pending, plan.prefix + res.text, res.prompt, progress)
                lines.append(line)
                bar.reply(pending.attempt.number + 1, not line.get("retry"))
            store.append_many(lines)
            bar.update(sum(1 for line in lines if not line.get("retry")))


@dataclass
class Plan:
    """Everything a run needs before the model loads: settings, output and its fingerprint, prompts, seed questions."""

    settings: Settings
    output: Path
    fingerprint: str
    expected: list[str]  # every slot id, topic by topic
    real: dict[int, list[Question]]  # the topic's WVS questions (examples)
    builder: PromptBuilder
    prefix: str  # the text each reply is started with

    @classmethod
    def from_settings(cls, stage: QuestionsStageSettings) -> Plan:
        settings = stage.questions
        wvs = WVSData.load(stage.wvs_dir)
        builder = PromptBuilder(PromptStyle.from_config(stage.templates, stage.prompt))
        return cls(
            settings=settings,
            output=stage.output,
            fingerprint=stage.fingerprint,
            expected=[k for t in settings.topics for k in settings.slot_ids(t)],
            real={t: wvs.questions_of_topic(TOPIC_NAMES[t]) for t in settings.topics},
            builder=builder,
            prefix=builder.question_generation_prefix(),
        )


def _open_store(plan: Plan, finished: dict[str, dict[str, Any]], keep: str | None) -> tuple[ResumableJsonl, Progress]:
    """The part file (resumed if present) and the progress it starts from: carried-over slots count as resolved.
    ``keep`` (the no-shrink hint) makes the store refuse to replace a finished file with fewer records."""
    outputs.mark(plan.output, plan.fingerprint, complete=False)
    store = ResumableJsonl(plan.output, key=lambda r: r["id"], never_fewer=keep)
    if store.dropped_torn_line:
        log.warning("questions: dropped a torn last line from %s (killed run)", store.part)
    if finished and CARRIED not in store.records:  # extend a finished file: its slots count as resolved from the start
        store.append_many(
            [*(r for k, r in finished.items() if k not in store.records), {"id": CARRIED, "ids": list(finished)}]
        )
    carried = store.records.get(CARRIED, {}).get("ids", [])
    return store, Progress(resolved={k: store.records[k] for k in carried if k in store.records})


def run_questions(stage: QuestionsStageSettings, runtime: StageRuntime) -> dict[str, Any]:
    """The stage on one process (``runtime``: the engine and W&B run, bound to the config by the entry point)."""
    plan = Plan.from_settings(stage)
    action = outputs.prepare(plan.output, plan.fingerprint, stage.overwrite)
    finished = _finished_slots(plan.output) if action == "skip" else {}
    if action == "skip" and set(plan.expected) <= set(finished):
        n = sum(not finished[k].get("failed") for k in plan.expected)
        log.info(
            "questions: %s is complete for this config (%d questions); skipping (overwrite=true redoes it)",
            plan.output,
            n,
        )
        return {"stage": "questions", "output": str(plan.output), "generated": n, "skipped": True}

    keep = None if stage.overwrite else "set questions.output=<another file>, or overwrite=true"
    if keep and action == "fresh":  # fewer slots than the finished file holds: it could only shrink (before any work)
        refuse_fewer(plan.output, len(plan.expected), keep)

    store, progress = _open_store(plan, finished, keep)
    engine = runtime.engine()  # loads torch and transformers: only once there is work to do
    started = time.perf_counter()
    done_before = sum(k in store.records for k in plan.expected)
    bar = ReplyBar(len(plan.expected), plan.settings.max_retries + 1, done_before)
    try:
        run_steps(plan, engine, store, progress, bar)
    finally:
        bar.close()
        store.close()
    if progress.replayed:
        log.info(
            "questions: resumed; %d attempts replayed from %s, %d asked now",
            progress.replayed,
            store.part,
            progress.new_replies,
        )
    return record_outcome(runtime, plan, store, progress, time.perf_counter() - started)


def record_outcome(
    runtime: StageRuntime, plan: Plan, store: ResumableJsonl, progress: Progress, elapsed: float
) -> dict[str, Any]:
    """Write the final file and its sidecar, log the run, and return the stage summary."""
    good = [k for k in plan.expected if k in store.records and not store.records[k].get("failed")]
    failed = [store.records[k] for k in plan.expected if k in store.records and store.records[k].get("failed")]
    bad_json = sum(r["attempts"] for r in failed) + sum(store.records[k]["meta"]["attempts"] - 1 for k in good)
    rate = progress.new_replies / elapsed if elapsed else None
    with runtime.track() as run:
        store.finish(order=good)
        outputs.mark(
            plan.output, plan.fingerprint, complete=True, generated=len(good), bad_json=bad_json, failed=failed
        )
        run.table("questions/samples", ["id", "attempt", "prompt", "raw", "parsed"], progress.samples)
        run.summary(
            {
                "generated": len(good),
                "failed_slots": len(failed),
                "bad_json": bad_json,
                "replies_this_run": progress.new_replies,
                "replies_per_s": rate,
            }
        )
    log.info(
        "questions: %d generated, %d slots failed after %d retries, %d bad-JSON replies -> %s",
        len(good),
        len(failed),
        plan.settings.max_retries,
        bad_json,
        plan.output,
    )
    return {
        "stage": "questions",
        "output": str(plan.output),
        "generated": len(good),
        "failed": len(failed),
        "bad_json": bad_json,
        "replies_per_s": rate,
        "replies_this_run": progress.new_replies,
        "skipped": False,
    }
