"""Step (d): evaluation of the QLoRA adapter on the run's device, with the project's evaluation pieces: the adapter
resolved and checked (``evaluate.adapters``), its saved prompt style, WVS questions asked per ``evaluate.prompting``,
answered by the engine in log-prob mode, recorded and scored (``evaluate.alignment_score``). The 4-bit base is placed the
way training places it (this rank's GPU); the reloaded adapter's logits are compared with the trained model's.
"""

from __future__ import annotations

from typing import Any

import torch

from culturespa.acceptance.models import Setup
from culturespa.acceptance.record import Skip, StepResult
from culturespa.acceptance.training import PROBE_IDS
from culturespa.answers.records import answer_record
from culturespa.evaluate.adapters import resolve_adapters
from culturespa.evaluate.alignment_score import score_all
from culturespa.evaluate.prompting import adapter_style, answer_messages
from culturespa.infer.engine import Decoding, Engine, Request
from culturespa.models.loader import ModelSpec, load_model, load_tokenizer
from culturespa.prompts.builder import PromptStyle
from culturespa.train.peft_model import device_map_for
from culturespa.wvs.survey import WVSData

CULTURE = "USA"


def evaluation_step(setup: Setup, trained: dict[str, Any] | None, row: StepResult, tolerance: float = 1e-2) -> None:
    """Load the 4-bit base and the adapter on the device, check the reload, answer and score a few questions."""
    from peft import PeftModel  # heavy optional dependency: only with an adapter

    if trained is None:
        raise Skip("no QLoRA adapter: the QLoRA step did not finish")
    cfg = trained["cfg"]
    plan = resolve_adapters(str(trained["adapter"]), [CULTURE], cfg.model, setup.cache_dir)
    spec = ModelSpec.from_config(cfg.model)
    on_gpu = setup.device.startswith("cuda")
    base = load_model(
        spec,
        setup.cache_dir,
        quantization="4bit",
        device_map=device_map_for(0, on_gpu),
        compute_dtype=str(cfg.peft.compute_dtype),
        double_quant=bool(cfg.peft.double_quant),
    )
    model = PeftModel.from_pretrained(base, str(plan.folder_for(None))).eval()
    if trained.get("logits") is not None:
        with torch.no_grad():
            logits = model(input_ids=PROBE_IDS.to(next(model.parameters()).device)).logits.float().cpu()
        diff = float((logits - trained["logits"]).abs().max())
        scale = float(trained["logits"].abs().max())
        row.figures["reload_max_logit_diff"] = diff
        row.checks[f"reloaded logits within {tolerance:g} x max |logit|"] = diff <= tolerance * max(scale, 1e-6)
    tokenizer = load_tokenizer(spec, setup.cache_dir)
    engine = Engine(model, tokenizer, batch_size=32, device=setup.device)
    row.figures["device"] = str(engine.device)
    row.checks["answered on the run's device"] = engine.device.type == setup.device.split(":")[0]
    wvs = WVSData.load(setup.wvs_dir)
    questions = [q for q in wvs.eval_questions if wvs.answer_shares(CULTURE, q.id)][: setup.eval_questions]
    # the training run's prompt variant, the adapter's templates
    style = adapter_style(PromptStyle.from_config(cfg.templates, cfg.prompt), plan.style_for(None))
    requests = [Request(q.id, answer_messages(wvs, style, q, CULTURE), q.numbers) for q in questions]
    results = [r for b in engine.answer(requests, Decoding(mode="logprob", max_new_tokens=0)) for r in b]
    by_id = {q.id: q for q in questions}
    records = [answer_record(r, by_id[r.key], style.name, CULTURE, 0) for r in results]
    scored = score_all({CULTURE: records}, questions, wvs, [CULTURE])
    row.figures["questions"] = len(questions)
    row.figures["valid_share"] = sum(r["valid"] for r in records) / max(1, len(records))
    row.figures["alignment"] = scored["cultures"][CULTURE]["score"]
    row.checks["every question answered"] = len(records) == len(questions) and all(r["valid"] for r in records)
