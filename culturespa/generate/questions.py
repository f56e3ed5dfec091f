"""Stage ``questions``: self-instruct generation of new survey questions per WVS topic (step 1 of CultureSPA).

Slot ``n`` of topic ``t`` becomes question ``gen-t{t}-{n}``. Work proceeds in waves: each wave takes up to
``questions.batch_size`` open slots per topic and sends all their prompts to the engine together. A prompt shows
``n_examples`` examples: ``n_generated`` questions already generated for the topic (as many as exist at the start of
the wave) and real WVS questions of the topic for the rest, shuffled; the choice is seeded from (seed, topic, slot,
attempt). A reply without a usable JSON question is retried (next attempt) up to ``max_retries`` times; a slot that
still fails is recorded as failed, so a rerun does not retry it forever.

Resume equals an uninterrupted run: every outcome is appended to ``<output>.part`` as a whole line as soon as it is
known (a finished slot, a failed slot, and also each retried attempt as a ``{"id": "gen-t0-3#a0", "retry": true}``
line). A rerun replays the wave loop from the start: requests whose outcome is in the part file are not sent to the
model, so every wave, every slot's attempt counter and every set of examples a slot sees are rebuilt exactly as the
uninterrupted run had them, and only the attempts that never finished are asked again.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from culturespa.data.jsonl import ResumableJsonl, read_jsonl, refuse_fewer
from culturespa.data.questions import Question
from culturespa.data.survey import WVSData
from culturespa.data.topics import TOPIC_NAMES
from culturespa.errors import CultureSPAError
from culturespa.generate import outputs
from culturespa.generate.json_extract import Extracted, extract_question
from culturespa.generate.progress import ReplyBar
from culturespa.generate.track import stage_run
from culturespa.prompts.builder import PromptBuilder, PromptStyle

log = logging.getLogger("culturespa.generate")
SAMPLE_ROWS = 50
CARRIED = "#carried"  # part-file line naming the slots taken over from a finished file (grown per_topic)


def resolve_topics(value: Any) -> list[int]:
    """``all`` or a list of topic indices 0-12 (an int or a topic name also accepted)."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if value == "all" or value is None:
        return list(range(len(TOPIC_NAMES)))
    items = value if isinstance(value, list) else [value]
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item in TOPIC_NAMES:
            index = TOPIC_NAMES.index(item)
        elif isinstance(item, int) and 0 <= item < len(TOPIC_NAMES):
            index = item
        elif isinstance(item, str) and item.isdigit() and int(item) < len(TOPIC_NAMES):
            index = int(item)
        else:
            raise CultureSPAError(f"questions.topics: {item!r} is not a topic index 0-{len(TOPIC_NAMES) - 1} or 'all'")
        if index not in out:
            out.append(index)
    return out


def question_id(topic: int, slot: int) -> str:
    return f"gen-t{topic}-{slot}"


def _check(qcfg: DictConfig) -> None:
    ints = {"per_topic": 1, "n_examples": 1, "n_generated": 0, "max_retries": 0, "batch_size": 1, "max_new_tokens": 1}
    for key, low in ints.items():
        value = qcfg.get(key)
        if not isinstance(value, int) or value < low:
            raise CultureSPAError(f"questions.{key}={value!r} must be an integer >= {low}")
    if qcfg.n_generated > qcfg.n_examples:
        raise CultureSPAError(
            f"questions.n_generated={qcfg.n_generated} exceeds questions.n_examples={qcfg.n_examples}"
        )
    if not (isinstance(qcfg.temperature, (int, float)) and qcfg.temperature >= 0):
        raise CultureSPAError(f"questions.temperature={qcfg.temperature!r} must be >= 0 (0 = greedy)")
    if not (isinstance(qcfg.top_p, (int, float)) and 0 < qcfg.top_p <= 1):
        raise CultureSPAError(f"questions.top_p={qcfg.top_p!r} must be in (0, 1]")


def pick_examples(
    real: list[Question], generated: list[Question], n_examples: int, n_generated: int, rng: random.Random
) -> list[Question]:
    """``n_generated`` generated examples (fewer while fewer exist), real ones for the rest, shuffled."""
    gen = rng.sample(generated, min(n_generated, len(generated)))
    chosen = gen + rng.sample(real, min(n_examples - len(gen), len(real)))
    rng.shuffle(chosen)
    return chosen


def _record(
    topic: int, slot: int, got: Extracted, examples: list[Question], attempts: int, seed: int, raw: str, model: str
) -> dict[str, Any]:
    question = Question(
        id=question_id(topic, slot),
        text=got.question,
        options=tuple(got.options),
        first_option=1,
        topic=TOPIC_NAMES[topic],
        source="generated",
        meta={
            "topic_index": topic,
            "examples": [q.id for q in examples],
            "attempts": attempts,
            "seed": seed,
            "model": model,
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


def run_questions(cfg: DictConfig) -> dict[str, Any]:
    qcfg = cfg.questions
    _check(qcfg)
    topics = resolve_topics(qcfg.topics)
    seed = int(cfg.seed)
    output = Path(str(qcfg.output))
    wvs = WVSData.load(cfg.paths.wvs_dir)
    real = {t: wvs.questions_of_topic(TOPIC_NAMES[t]) for t in topics}
    builder = PromptBuilder(PromptStyle.from_config(cfg.templates, cfg.prompt))
    prefix = builder.question_generation_prefix()
    # per_topic and topics are left out (growing them extends a finished file instead of starting over), and so are
    # batch_size and max_retries (they change how work is scheduled, not what a question is)
    ignore = ("output", "overwrite", "per_topic", "topics", "batch_size", "max_retries")
    settings = {k: v for k, v in outputs.plain(cfg, "questions").items() if k not in ignore}
    fp = outputs.fingerprint(
        {
            "model": outputs.plain(cfg, "model"),
            "questions": settings,
            "seed": seed,
            "template": outputs.plain(cfg, "templates.question_generation"),
        }
    )
    action = outputs.prepare(output, fp, outputs.overwrite_requested(cfg))
    expected = [question_id(t, n) for t in topics for n in range(int(qcfg.per_topic))]
    finished = _finished_slots(output) if action == "skip" else {}
    if action == "skip" and set(expected) <= set(finished):
        n = sum(not finished[k].get("failed") for k in expected)
        log.info(
            "questions: %s is complete for this config (%d questions); skipping (overwrite=true redoes it)", output, n
        )
        return {"stage": "questions", "output": str(output), "generated": n, "skipped": True}

    from culturespa.infer.engine import Engine, Request

    keep = None if outputs.overwrite_requested(cfg) else "set questions.output=<another file>, or overwrite=true"
    if keep and action == "fresh":  # fewer slots than the finished file holds: it could only shrink (before any work)
        refuse_fewer(output, len(expected), keep)
    outputs.mark(output, fp, complete=False)
    store = ResumableJsonl(output, key=lambda r: r["id"], never_fewer=keep)
    if store.dropped_torn_line:
        log.warning("questions: dropped a torn last line from %s (killed run)", store.part)
    if finished and CARRIED not in store.records:  # extend a finished file: its slots count as resolved from the start
        store.append_many(
            [*(r for k, r in finished.items() if k not in store.records), {"id": CARRIED, "ids": list(finished)}]
        )
    carried = store.records.get(CARRIED, {}).get("ids", [])
    engine = Engine.from_config(cfg)
    # the state the wave loop decides with, rebuilt by replay on resume: resolved slots and attempt counters
    resolved: dict[str, dict[str, Any]] = {k: store.records[k] for k in carried if k in store.records}
    attempts: dict[str, int] = {}
    cache: dict[str, Question] = {}

    def as_question(key: str) -> Question:
        if key not in cache:
            cache[key] = Question.from_record(resolved[key])
        return cache[key]

    samples: list[list[Any]] = []
    new_replies = replayed = 0
    started = time.perf_counter()
    bar = ReplyBar(len(expected), int(qcfg.max_retries) + 1, sum(k in store.records for k in expected))
    try:
        while True:
            wave: list[Any] = []
            examples_of: dict[str, list[Question]] = {}
            for t in topics:
                slot_ids = [question_id(t, n) for n in range(int(qcfg.per_topic))]
                open_slots = [n for n in range(int(qcfg.per_topic)) if question_id(t, n) not in resolved]
                generated = [as_question(k) for k in slot_ids if k in resolved and not resolved[k].get("failed")]
                for n in open_slots[: int(qcfg.batch_size)]:
                    qid = question_id(t, n)
                    attempt = attempts.get(qid, 0)
                    rng = random.Random(f"{seed}|{t}|{n}|{attempt}")
                    examples = pick_examples(real[t], generated, int(qcfg.n_examples), int(qcfg.n_generated), rng)
                    key = f"{qid}#a{attempt}"
                    examples_of[key] = examples
                    messages = builder.question_generation_messages(TOPIC_NAMES[t], examples)
                    wave.append(Request(key, messages, prefix=prefix))
            if not wave:
                break
            todo = []
            for req in wave:  # outcomes an interrupted run already recorded: replayed, not asked again
                qid, attempt = req.key.rsplit("#a", 1)[0], int(req.key.rsplit("#a", 1)[1])
                if req.key in store.records:
                    attempts[qid] = attempt + 1
                    replayed += 1
                elif qid in store.records:
                    resolved[qid] = store.records[qid]
                    replayed += 1
                else:
                    todo.append(req)
            if not todo:
                continue
            batches = engine.generate(
                todo,
                float(qcfg.temperature),
                float(qcfg.top_p),
                int(qcfg.max_new_tokens),
                seed=seed,
                desc="questions: wave",
            )
            for results in batches:
                lines: list[dict[str, Any]] = []
                for res in results:
                    qid, attempt = res.key.rsplit("#a", 1)[0], int(res.key.rsplit("#a", 1)[1])
                    t, n = (int(x) for x in qid.removeprefix("gen-t").split("-"))
                    reply = prefix + res.text  # the reply as the model wrote it, started by the response prefix
                    got = extract_question(reply)
                    new_replies += 1
                    bar.reply(attempt + 1, isinstance(got, Extracted) or attempt + 1 > int(qcfg.max_retries))
                    if len(samples) < SAMPLE_ROWS:
                        samples.append(
                            [
                                qid,
                                attempt,
                                res.prompt,
                                reply,
                                got.__dict__ if isinstance(got, Extracted) else f"bad JSON: {got}",
                            ]
                        )
                    if isinstance(got, Extracted):
                        resolved[qid] = _record(
                            t, n, got, examples_of[res.key], attempt + 1, seed, reply, str(cfg.model.name)
                        )
                        lines.append(resolved[qid])
                    elif attempt + 1 > int(qcfg.max_retries):
                        resolved[qid] = {
                            "id": qid,
                            "failed": True,
                            "attempts": attempt + 1,
                            "reason": got,
                            "raw": reply,
                        }
                        lines.append(resolved[qid])
                    else:
                        attempts[qid] = attempt + 1
                        lines.append({"id": res.key, "retry": True, "reason": got})
                store.append_many(lines)
                bar.update(sum(1 for line in lines if not line.get("retry")))
    finally:
        bar.close()
        store.close()
    if replayed:
        log.info("questions: resumed; %d attempts replayed from %s, %d asked now", replayed, store.part, new_replies)
    good = [k for k in expected if k in store.records and not store.records[k].get("failed")]
    failed = [store.records[k] for k in expected if k in store.records and store.records[k].get("failed")]
    bad_json = sum(r["attempts"] for r in failed) + sum(store.records[k]["meta"]["attempts"] - 1 for k in good)
    elapsed = time.perf_counter() - started
    with stage_run(cfg, "questions") as run:
        store.finish(order=good)
        outputs.mark(output, fp, complete=True, generated=len(good), bad_json=bad_json, failed=failed)
        run.table("questions/samples", ["id", "attempt", "prompt", "raw", "parsed"], samples)
        run.summary(
            {
                "generated": len(good),
                "failed_slots": len(failed),
                "bad_json": bad_json,
                "replies_this_run": new_replies,
                "replies_per_s": new_replies / elapsed if elapsed else None,
            }
        )
    log.info(
        "questions: %d generated, %d slots failed after %d retries, %d bad-JSON replies -> %s",
        len(good),
        len(failed),
        int(qcfg.max_retries),
        bad_json,
        output,
    )
    return {
        "stage": "questions",
        "output": str(output),
        "generated": len(good),
        "failed": len(failed),
        "bad_json": bad_json,
        "replies_per_s": new_replies / elapsed if elapsed else None,
        "replies_this_run": new_replies,
        "skipped": False,
    }
