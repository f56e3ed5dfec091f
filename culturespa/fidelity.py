"""Print the figures quoted in docs/fidelity.md: the question filters' counts on the paper's pool, the gold-answer
ties of the survey data, the cross-culture-thinking lists that depend on tie order, what the ``paper_*`` presets set
where the paper's scripts decide a number (sampler, seeds, question-generation schedule and acceptance, training
system prompt, quantity runs), the prompt layout as rendered, and the small reading rules where the released scripts
and ours part.

    python -m culturespa.fidelity [--data DIR]      (DIR holds wvs/ and generated-questions-llama3-8b-instruct/)

No model is involved; it runs in seconds.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from culturespa.config import compose
from culturespa.evaluate.prompting import answer_messages
from culturespa.infer.engine import Decoding
from culturespa.infer.parsing import parse_answer
from culturespa.prompts.builder import PromptBuilder, PromptStyle
from culturespa.questions.filter import filter_questions, normalise, paper_seed_texts
from culturespa.questions.paper_filter import paper_filter, table
from culturespa.questions.pool import load_questions
from culturespa.settings import DataSettings
from culturespa.train.run import training_style
from culturespa.wvs.cultures import PAPER_CULTURES, get_culture
from culturespa.wvs.survey import WVSData, default_data_dir

POOL = "generated-questions-llama3-8b-instruct"
PRESETS = ("paper_joint", "paper_cct", "paper_quality", "paper_quantity", "paper_specific")


def filter_counts(data: Path, wvs: WVSData) -> None:
    pool = load_questions(data / POOL)
    kept, steps, _ = paper_filter(pool, paper_seed_texts(wvs.root))
    print(f"filter=paper on the paper's pool ({data / POOL}):")
    print(table(len(pool), steps))
    for step in steps:
        if step.detail:
            print(f"  {step.step}: {step.detail}")
    strict, report, _ = filter_questions(pool, {normalise(q.text) for q in wvs.questions.values()})
    print(f"\nfilter=strict on the same pool: kept {report['kept']} of {report['n_input']}")
    for rule, count in report["removed"].items():
        if count:
            print(f"  removed {rule}: {count}")
    print(f"  modified: {report['modified']}")
    print(f"filter=paper keeps {len(kept) - len(strict)} more questions than filter=strict")


def gold_ties(wvs: WVSData) -> None:
    print("\nGold ties (two or more options share the largest share):")
    print("culture  question  tied (stored order)  gold (first listed)  lowest number")
    n = differ = 0
    for culture in sorted(wvs.shares):
        for q_id, shares in wvs.shares[culture].items():
            if not shares:
                continue
            top = max(shares.values())
            tied = [number for number, share in shares.items() if share == top]
            if len(tied) > 1:
                n += 1
                gold = wvs.majority_answer(culture, q_id)
                differ += gold != min(tied)
                print(f"{culture:7}  {q_id:8}  {tied!s:19}  {gold!s:19}  {min(tied)}")
    print(f"{n} ties; in {differ} the gold (first listed) is not the lowest option number")


def similarity_ties(wvs: WVSData) -> None:
    print("\nP2 (cross-culture thinking) lists where the paper's tie order differs from (value, code) order:")
    n = 0
    for culture in PAPER_CULTURES:
        row = wvs.similarity[culture]
        others = [c for c in PAPER_CULTURES if c != culture and c in row]
        ranked = sorted(others, key=lambda c: (-row[c], c))
        by_code = (ranked[:3], list(reversed(ranked[-3:])))
        paper = wvs.most_and_least_similar(culture, list(PAPER_CULTURES))
        if paper != by_code:
            n += 1
            print(f"  {culture}: paper {paper[0]} / {paper[1]}; by code {by_code[0]} / {by_code[1]}")
    print(f"{n} of {len(PAPER_CULTURES)} cultures")


def paper_presets(out_dir: Path) -> None:
    """Per ``paper_*`` preset, the settings the paper's scripts decide and the docs/fidelity.md rows check."""
    print("\npaper_* presets (composed as `python -m culturespa.pipeline experiment=<name>` would):")
    for name in PRESETS:
        cfg = compose("pipeline", [f"experiment={name}"], output_dir=out_dir)
        dec, q = Decoding.from_config(cfg.decoding), cfg.questions
        seeds = [dec.run_seed(int(cfg.seed), r) for r in range(int(cfg.eval.runs))]
        sweep = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        print(f"  {name}:")
        print(f"    answers + evaluation: T {dec.temperature}, top-k {dec.top_k}, top-p {dec.top_p}, seeds {seeds}")
        print(
            f"    questions: T {q.temperature}, top-k {q.top_k}, top-p {q.top_p}, exposure {q.exposure}, "
            f"accept {q.accept}, reply prefill {cfg.templates.question_generation.response_prefix!r}"
        )
        trained = training_style(PromptStyle.from_config(cfg.templates, cfg.prompt), DataSettings.from_config(cfg.data))
        print(f"    pairs from {cfg.data.system} answers; SFT system prompt {trained.system}")
        if sweep:
            print(f"    sweep: {', '.join(f'{k}={v}' for k, v in sweep.items())}")


def prompt_layout(wvs: WVSData, out_dir: Path) -> None:
    """The default templates' P1, P3 and question-generation prompts, as rendered."""
    question = wvs.questions["Q1"]
    for prompt in ("p1", "p1_p3"):
        cfg = compose("evaluate", [f"prompt={prompt}"], output_dir=out_dir)
        messages = answer_messages(wvs, PromptStyle.from_config(cfg.templates, cfg.prompt), question, "UKR")
        print(f"\n{prompt} for UKR on Q1 (system, then user turn):")
        for message in messages:
            print("  | " + message["content"].replace("\n", "\n  | "))
    builder = PromptBuilder(PromptStyle.from_config(cfg.templates, cfg.prompt))
    (_, user) = builder.question_generation_messages("Happiness and Well-being", [question])
    print("\nquestion generation, user turn with one example:")
    print("  | " + user["content"].replace("\n", "\n  | "))


def reading_rules() -> None:
    """Where the released scripts' reading of a reply differs from ours, on made-up replies."""
    print("\nReading rules, released scripts vs ours:")
    fullwidth = "\uff13"  # a full-width 3: Python's \\d matches it and int() reads it
    paper = re.search(r"\d+", fullwidth)
    ours = parse_answer(fullwidth, [1, 2, 3, 4])
    print(f"  reply {fullwidth!r}: the paper's \\d reads {int(paper.group()) if paper else None}; ours reads {ours}")
    print(
        f"  aware '01' vs unaware '1': the paper's pair rule (strings) differs: {'01' != '1'}; ours (numbers) ", end=""
    )
    print(f"differs: {parse_answer('01', [1, 2]) != parse_answer('1', [1, 2])}")
    print(f"  article of UKR: {get_culture('UKR').person!r} (the paper's a_an_dict: 'a')")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: $CULTURESPA_DATA_DIR or data/)")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    wvs = WVSData.load(data)
    filter_counts(data, wvs)
    gold_ties(wvs)
    similarity_ties(wvs)
    with tempfile.TemporaryDirectory() as scratch:  # composing needs an output folder; nothing is written there
        paper_presets(Path(scratch))
        prompt_layout(wvs, Path(scratch))
    reading_rules()


if __name__ == "__main__":
    main()
