"""Markdown tables of the fold-protocol scores (tools/eval_folds.py, tools/fit_folds.py).

    python tools/folds_table.py benchmarks/results/folds_2026-12-04 [--fill README.md docs/models.md docs/losses.md]

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


def device_scores(d):
    """The runs' own end-of-run scores on the JPEG copies (result.json from the GPU machine), by key."""
    out = {}
    for name, prefix in (("runs_device1.json", "folds"), ("runs_device2.json", "folds2")):
        path = os.path.join(d, name)
        if os.path.exists(path):
            for run, entry in json.load(open(path)).items():
                if "result.json" in entry:
                    out[f"{prefix}/{run}"] = json.loads(entry["result.json"])
    return out


def table(scores, rows, fallback=None):
    """Figures from scores.json (PNG); where a run was not scored here, its own score on the JPEG copies
    marked with a star."""
    lines = [HEADER, "|---|---:|---:|---:|---:|"]
    for label, a, b in rows:
        cells = []
        for key in (a, b):
            e, star = scores.get(key), ""
            if e is None and fallback and key in fallback and "heldout" in fallback[key]:
                e, star = fallback[key], "*"
            cells += [pct(e["heldout"]["miou"]) + star if e else "-", pct(e["val"]["miou"]) + star if e else "-"]
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


def tables(d):
    scores = json.load(open(os.path.join(d, "scores.json")))
    fb = device_scores(d)
    out = {"folds": table(scores, ROWS, fb), "sparse": table(scores, SPARSE, fb)}
    tp = os.path.join(d, "crf_transfer.json")
    if os.path.exists(tp):
        out["crf"] = crf_table(json.load(open(tp)), scores)
    return out


def fill(page: str, tabs: dict) -> None:
    """Writes each table between its ``<!-- NAME-table -->`` and ``<!-- /NAME-table -->`` markers."""
    text = open(page).read()
    for name, tab in tabs.items():
        start, end = f"<!-- {name}-table -->", f"<!-- /{name}-table -->"
        if start not in text:
            continue
        if end in text:
            i, j = text.index(start), text.index(end) + len(end)
        else:
            i = text.index(start)
            j = i + len(start)
        text = text[:i] + f"{start}\n{tab}\n{end}" + text[j:]
    tmp = page + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, page)


def main():
    """``folds_table.py DIR`` prints the tables; ``folds_table.py DIR --fill PAGE...`` writes them into pages."""
    tabs = tables(sys.argv[1])
    if "--fill" in sys.argv:
        for page in sys.argv[sys.argv.index("--fill") + 1 :]:
            fill(page, tabs)
        return
    for tab in tabs.values():
        print(tab, end="\n\n")


if __name__ == "__main__":
    main()
