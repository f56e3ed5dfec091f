"""Print the figures quoted in docs/fidelity.md: the question filters' counts on the paper's pool, the gold-answer
ties of the survey data and the cross-culture-thinking lists that depend on tie order.

    python -m culturespa.fidelity [--data DIR]      (DIR holds wvs/ and generated-questions-llama3-8b-instruct/)

No model is involved; it runs in seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from culturespa.data.cultures import PAPER_CULTURES
from culturespa.data.survey import WVSData, default_data_dir
from culturespa.generate.filter import filter_questions, normalise, paper_seed_texts
from culturespa.generate.paper_filter import paper_filter, table
from culturespa.generate.pool import load_questions

POOL = "generated-questions-llama3-8b-instruct"


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: $CULTURESPA_DATA_DIR or data/)")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    wvs = WVSData.load(data)
    filter_counts(data, wvs)
    gold_ties(wvs)
    similarity_ties(wvs)


if __name__ == "__main__":
    main()
