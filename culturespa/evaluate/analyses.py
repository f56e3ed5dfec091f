"""The paper's analyses as files and pictures: culture relations, comparisons of result files, data-quantity curves.

* ``relations``: the model steered to culture A, scored against culture B's answers, for all pairs (``eval.suite=
  relations`` runs it after an ordinary evaluation, which already holds every steered answer set) → CSV + heatmap.
* ``compare``: several ``alignment.json`` (joint vs specific, prompt variants with/without CultureSPA) → grouped bars
  per culture plus the average.
* ``quantity``: ``alignment.json`` files trained on growing data fractions → average score against the fraction.

CLI::

    python -m culturespa.evaluate.analyses compare a/alignment.json b/alignment.json --labels joint specific --out c.png
    python -m culturespa.evaluate.analyses quantity f25/alignment.json f50/alignment.json --x 0.25 0.5 --out q.png

Each command writes the PNG (plus a CSV beside it) and logs both to W&B (``--wandb offline|online|disabled``,
default ``$WANDB_MODE`` or offline).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from culturespa.errors import CultureSPAError, fail


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---- culture relations ------------------------------------------------------------------------------------------
def relations_outputs(
    matrix: Sequence[Sequence[float | None]], cultures: Sequence[str], out_dir: str | Path, name: str = "relations"
) -> dict[str, Path]:
    """``{name}.csv`` (rows: steered culture, columns: culture scored against) and ``{name}.png`` heatmap."""
    import numpy as np

    out = Path(out_dir)
    rows = [[steered, *("" if v is None else v for v in row)] for steered, row in zip(cultures, matrix, strict=True)]
    csv_path = _write_csv(out / f"{name}.csv", ["steered \\ scored", *cultures], rows)

    plt = _pyplot()
    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    size = max(4.0, 0.45 * len(cultures) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(data, cmap="viridis")
    ax.set_xticks(range(len(cultures)), cultures, rotation=90)
    ax.set_yticks(range(len(cultures)), cultures)
    ax.set_xlabel("scored against culture")
    ax.set_ylabel("model steered to culture")
    if len(cultures) <= 20:
        for i in range(len(cultures)):
            for j in range(len(cultures)):
                if not np.isnan(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", fontsize=6, color="white")
    fig.colorbar(image, ax=ax, label="alignment score (%)")
    ax.set_title("Culture relations")
    fig.tight_layout()
    png_path = out / f"{name}.png"
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return {"csv": csv_path, "png": png_path}


# ---- comparisons across result files ----------------------------------------------------------------------------
def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found (expected an alignment.json written by evaluate.py)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise fail(path, f"malformed JSON at line {err.lineno}: {err.msg}") from None
    if not isinstance(data, dict) or data.get("metric") != "alignment" or "cultures" not in data:
        raise fail(path, "not an alignment.json (needs 'metric': 'alignment' and 'cultures')")
    return data


def compare(
    paths: Sequence[str | Path], labels: Sequence[str] | None, out: str | Path, key: str = "score"
) -> dict[str, Path]:
    """Grouped bars: one group per culture (plus the average), one bar per result file."""
    import numpy as np

    if not paths:
        raise CultureSPAError("compare: give at least one alignment.json")
    labels = list(labels) if labels else [Path(p).parent.name or str(p) for p in paths]
    if len(labels) != len(paths):
        raise CultureSPAError(f"compare: {len(labels)} labels for {len(paths)} files")
    results = [load_result(p) for p in paths]
    cultures = list(dict.fromkeys(c for r in results for c in r["cultures"]))
    avg_key = "average" if key == "score" else f"{key}_average"
    groups = [*cultures, "average"]

    def value(result: dict[str, Any], group: str) -> float | None:
        if group == "average":
            return result.get(avg_key)
        row = result["cultures"].get(group)
        return None if row is None else row.get(key)

    table = [[g, *(value(r, g) for r in results)] for g in groups]
    out = Path(out)
    csv_path = _write_csv(
        out.with_suffix(".csv"), ["culture", *labels], [[x if x is not None else "" for x in row] for row in table]
    )
    plt = _pyplot()
    width = 0.8 / len(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(groups) * max(1, len(results) / 2)), 4))
    xs = np.arange(len(groups))
    for k, (label, result) in enumerate(zip(labels, results, strict=True)):
        heights = [np.nan if value(result, g) is None else value(result, g) for g in groups]
        ax.bar(xs + (k - (len(results) - 1) / 2) * width, heights, width, label=label)
    ax.set_xticks(xs, groups, rotation=90)
    ax.set_ylabel("alignment score (%)" if key == "score" else key)
    return _finish_plot(plt, fig, ax, "Comparison", out, csv_path)


def _finish_plot(plt: Any, fig: Any, ax: Any, title: str, out: Path, csv_path: Path) -> dict[str, Path]:
    """Legend outside the axes, title, save as PNG beside its CSV."""
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return {"png": out, "csv": csv_path}


def quantity_curve(
    paths: Sequence[str | Path],
    xs: Sequence[float],
    out: str | Path,
    cultures: Sequence[str] = (),
    xlabel: str = "fraction of training data",
) -> dict[str, Path]:
    """Average score (and optionally chosen cultures) against the amount of training data."""
    if len(paths) != len(xs):
        raise CultureSPAError(f"quantity: {len(xs)} x values for {len(paths)} files")
    results = [load_result(p) for p in paths]
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    series = {"average": [results[i].get("average") for i in order]}
    for code in cultures:
        series[code] = [(results[i]["cultures"].get(code) or {}).get("score") for i in order]
    x_sorted = [xs[i] for i in order]
    out = Path(out)
    rows = [[x, *(s[k] if s[k] is not None else "" for s in series.values())] for k, x in enumerate(x_sorted)]
    csv_path = _write_csv(out.with_suffix(".csv"), ["x", *series], rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in series.items():
        ax.plot(
            x_sorted,
            [float("nan") if y is None else y for y in ys],
            marker="o",
            label=name,
            linewidth=2.5 if name == "average" else 1.0,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("alignment score (%)")
    return _finish_plot(plt, fig, ax, "Data quantity", out, csv_path)


def log_outputs(run: Any, name: str, outputs: dict[str, Path]) -> None:
    """Log a PNG as an image and its CSV as a table in an open W&B run."""
    if run is None:
        return
    import wandb

    payload: dict[str, Any] = {}
    if "png" in outputs:
        payload[f"{name}/plot"] = wandb.Image(str(outputs["png"]))
    if "csv" in outputs:
        with Path(outputs["csv"]).open(encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        payload[f"{name}/table"] = wandb.Table(columns=rows[0], data=rows[1:])
    run.log(payload)


def _cli_run(mode: str, name: str, out: Path) -> Any:
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project="culturespa", job_type="analysis", name=name, mode=mode, dir=str(out.parent), reinit="finish_previous"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m culturespa.evaluate.analyses", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmp_ = sub.add_parser("compare", help="grouped bars of several alignment.json files")
    cmp_.add_argument("files", nargs="+")
    cmp_.add_argument("--labels", nargs="+")
    cmp_.add_argument("--metric", default="score", choices=["score", "js_similarity"])
    cmp_.add_argument("--out", required=True)
    qty = sub.add_parser("quantity", help="average score against training-data quantity")
    qty.add_argument("files", nargs="+")
    qty.add_argument("--x", nargs="+", type=float, required=True, help="data quantity of each file")
    qty.add_argument("--cultures", nargs="*", default=[])
    qty.add_argument("--xlabel", default="fraction of training data")
    qty.add_argument("--out", required=True)
    for p in (cmp_, qty):
        p.add_argument(
            "--wandb", default=os.environ.get("WANDB_MODE", "offline"), choices=["offline", "online", "disabled"]
        )
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if args.command == "compare":
            outputs = compare(args.files, args.labels, out, key=args.metric)
        else:
            outputs = quantity_curve(args.files, args.x, out, args.cultures, args.xlabel)
    except CultureSPAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    run = _cli_run(args.wandb, f"{args.command}-{out.stem}", out)
    try:
        log_outputs(run, args.command, outputs)
    finally:
        if run is not None:
            run.finish()
    print(f"wrote {outputs['png']} and {outputs['csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
