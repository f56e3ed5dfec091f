"""Ask the model (base, joint adapter or specific adapters) the WVS questions for each culture, resumably.

Answers are appended to ``<output_dir>/answers/{setting}_{CODE}.jsonl`` (or ``{setting}.jsonl`` when the prompt does
not depend on the culture: the model is then asked once and scored against every culture) with the shared answer
schema, through :class:`ResumableJsonl`; an interrupted evaluation skips what is already there. A fingerprint of the
settings that shape the answers is kept beside them, so answers made under other settings are never mixed in.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from culturespa.config import config_hash
from culturespa.data.jsonl import ResumableJsonl, read_jsonl
from culturespa.data.questions import Question
from culturespa.data.survey import WVSData
from culturespa.errors import fail
from culturespa.evaluate.adapters import AdapterPlan
from culturespa.evaluate.prompting import answer_messages, culture_independent, style_for
from culturespa.generate.shards import resume_chunk, resume_chunks

log = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("model", "eval.adapter", "prompt", "templates.answer", "decoding", "seed", "peft.quantization")
FINGERPRINT_FILE = "fingerprint.json"


def answer_key(record: dict[str, Any]) -> str:
    return f"{record['id']}|{record['culture']}|{record['run']}"


def effective_runs(cfg: Any) -> int:
    """``eval.runs`` in sample mode; greedy and log-prob answers are deterministic, so one run is enough."""
    runs = int(cfg.eval.runs)
    if cfg.decoding.mode != "sample" and runs > 1:
        log.warning("eval.runs=%d ignored: decoding.mode=%s is deterministic, using 1 run", runs, cfg.decoding.mode)
        return 1
    return runs


def check_fingerprint(cfg: Any, folder: Path) -> None:
    """Refuse to resume into answers made with other settings (another prompt, model, adapter or decoding)."""
    path = folder / FINGERPRINT_FILE
    current = {
        "hash": config_hash(cfg, FINGERPRINT_KEYS),
        "settings": {
            k: OmegaConf.to_container(OmegaConf.select(cfg, k), resolve=True)
            if OmegaConf.is_config(OmegaConf.select(cfg, k))
            else OmegaConf.select(cfg, k)
            for k in FINGERPRINT_KEYS
        },
    }
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


def _record(result: Any, question: Question, culture: str | None, setting: str, run: int) -> dict[str, Any]:
    dist = result.distribution
    return {
        "id": question.id,
        "culture": culture,
        "setting": setting,
        "run": run,
        "raw": result.text,
        "answer": result.answer if result.valid else None,
        "valid": bool(result.valid),
        "distribution": {str(k): float(v) for k, v in dist.items()} if dist else None,
        "question": question.to_record(),
    }


def _answer_group(
    engine: Any,
    decoding: Any,
    wvs: WVSData,
    style: Any,
    questions: Sequence[Question],
    culture: str | None,
    runs: int,
    seed: int,
    path: Path,
    setting: str,
    chunk: int = 256,
) -> list[dict[str, Any]]:
    """Answer ``questions`` ``runs`` times for one culture (or None), resuming from ``path``'s part/final file.

    Questions go to the engine in fixed chunks of ``chunk`` by position, and an unfinished chunk is redone whole: every
    answer is computed in the same batch as in an uninterrupted run, so a resumed file is bitwise identical (on CPU a
    prompt's logits change in the last bits with its batch partners), as in the answers stage."""
    from culturespa.infer.engine import Request

    store = ResumableJsonl(path, answer_key)
    if path.is_file() and not store.records:  # a finished earlier run: keep its answers, add any missing ones
        store.append_many(read_jsonl(path))
    if store.records:
        log.info("resuming: %d of %d records done (%s)", len(store.records), runs * len(questions), path)
    order: list[str] = []
    try:
        for run in range(runs):
            keys = [f"{question.id}|{culture}|{run}" for question in questions]
            order.extend(keys)
            by_key = dict(zip(keys, questions, strict=True))
            for members in resume_chunks(keys, chunk):
                if all(key in store.records for key in members):
                    continue
                todo = [
                    Request(key=k, messages=answer_messages(wvs, style, by_key[k], culture), numbers=by_key[k].numbers)
                    for k in members
                ]
                desc = f"{setting} {culture or 'all'} run {run}"
                for batch in engine.answer(todo, decoding, seed=decoding.run_seed(seed, run), desc=desc):
                    new = [r for r in batch if r.key not in store.records]
                    store.append_many(_record(r, by_key[r.key], culture, setting, run) for r in new)
        return store.finish(order)
    finally:
        store.close()


def _load_model(cfg: Any) -> tuple[Any, Any]:
    from culturespa.models.loader import ModelSpec, load_model, load_tokenizer

    spec = ModelSpec.from_config(cfg.model)
    quant = str(OmegaConf.select(cfg, "peft.quantization", default="none") or "none")
    compute = OmegaConf.select(cfg, "peft.compute_dtype", default=None)
    double = bool(OmegaConf.select(cfg, "peft.double_quant", default=True))
    model = load_model(spec, cfg.paths.cache_dir, quantization=quant, compute_dtype=compute, double_quant=double)
    return model, load_tokenizer(spec, cfg.paths.cache_dir)


def answer_with_model(
    cfg: Any, wvs: WVSData, questions: Sequence[Question], cultures: Sequence[str], plan: AdapterPlan
) -> dict[str | None, list[dict[str, Any]]]:
    """Answers per culture code, or under the key None when one culture-independent set serves every culture."""
    from culturespa.infer.engine import Decoding, Engine

    folder = Path(str(cfg.eval.output_dir)) / "answers"
    check_fingerprint(cfg, folder)
    runs = effective_runs(cfg)
    decoding = Decoding.from_config(cfg.decoding)
    setting = str(cfg.prompt.name)
    seed = int(cfg.seed)
    group = functools.partial(_answer_group, chunk=resume_chunk(cfg))  # the answers stage's chunking

    base, tokenizer = _load_model(cfg)
    model = base
    if plan.kind == "joint":
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(plan.folder_for(None)), adapter_name="joint")
        model.eval()

    answers: dict[str | None, list[dict[str, Any]]] = {}
    shared_style = style_for(cfg, plan.style_for(None)) if plan.kind != "specific" else None
    if shared_style is not None and culture_independent(shared_style):
        engine = Engine.from_config(cfg, model=model, tokenizer=tokenizer)
        answers[None] = group(
            engine, decoding, wvs, shared_style, questions, None, runs, seed, folder / f"{setting}.jsonl", setting
        )
        return answers

    for culture in cultures:
        if plan.kind == "specific":
            model = _activate(model, base, plan, culture)
        style = style_for(cfg, plan.style_for(culture))
        engine = Engine.from_config(cfg, model=model, tokenizer=tokenizer)
        answers[culture] = group(
            engine, decoding, wvs, style, questions, culture, runs, seed, folder / f"{setting}_{culture}.jsonl", setting
        )
    return answers


def _activate(model: Any, base: Any, plan: AdapterPlan, culture: str) -> Any:
    """Load (once) and switch to the culture's own adapter; every specific adapter shares one copy of the base."""
    from peft import PeftModel

    folder = str(plan.folder_for(culture))
    if model is base:
        model = PeftModel.from_pretrained(base, folder, adapter_name=culture)
    elif culture not in model.peft_config:
        model.load_adapter(folder, adapter_name=culture)
    model.set_adapter(culture)
    model.eval()
    return model
