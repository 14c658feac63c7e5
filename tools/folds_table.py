"""Markdown tables of the fold-protocol scores (tools/eval_folds.py, tools/fit_folds.py).

    python tools/folds_table.py benchmarks/results/folds_2026-12-04

Prints the table that README.md and docs/models.md carry; tests/test_folds_figures.py
checks that the pages' figures are these.
"""

from __future__ import annotations

import json
import os
import sys

#: (row label, run key per fold A and B): the rows of the pages' table
ROWS = (
    ("today's recipe (240 x 180, flips)", "folds/A_classic", "folds/B_classic"),
    ("strong recipe, DeepLabLite", "folds/A_strong", "folds/B_strong"),
    ("strong recipe, U-Net", "folds/A_unet", "folds/B_unet"),
    ("fine-tune without head, 10 epochs (control)", "folds2/A_control", "folds2/B_control"),
    ("CRF-as-RNN fine-tune, 10 epochs", "folds2/A_crfrnn", "folds2/B_crfrnn"),
)
SPARSE = (
    ("partial CE, 141 / 142 epochs", "folds/A_pce", "folds/B_pce"),
    ("partial CE, 41 / 30 epochs", "folds2/A_pce", "folds2/B_pce"),
    ("partial CE + DenseCRFLoss, 41 / 30 epochs", "folds/A_pce_crfloss", "folds/B_pce_crfloss"),
)
HEADER = "| model | A: 0006R0 held out | A: val | B: 0001TP held out | B: val |"


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def table(scores, rows):
    lines = [HEADER, "|---|---:|---:|---:|---:|"]
    for label, a, b in rows:
        cells = []
        for key in (a, b):
            e = scores.get(key)
            cells += [pct(e["heldout"]["miou"]) if e else "-", pct(e["val"]["miou"]) if e else "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def crf_table(transfer, scores):
    lines = [
        "| on the other fold's model | B: 0001TP held out | B: val | A: 0006R0 held out | A: val |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ("network", "classic", "fitted"):
        cells = []
        for src, dst in (("A", "B"), ("B", "A")):
            e = transfer.get(f"{src}_to_{dst}", {})
            cells += [pct(e.get(f"{dst}_{s}", {}).get(row)) for s in ("heldout", "val")]
        label = {
            "network": "network alone (strong DeepLabLite)",
            "classic": "+ dense CRF, classic parameters",
            "fitted": "+ dense CRF, fitted on the other fold's held-out drive",
        }[row]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    d = sys.argv[1]
    scores = json.load(open(os.path.join(d, "scores.json")))
    print(table(scores, ROWS), end="\n\n")
    print(table(scores, SPARSE), end="\n\n")
    tp = os.path.join(d, "crf_transfer.json")
    if os.path.exists(tp):
        print(crf_table(json.load(open(tp)), scores))


if __name__ == "__main__":
    main()
