"""Pack or unpack training runs for the trip back from a GPU machine.

    python tools/pack_runs.py pack RUNS_DIR OUT_DIR      # on the GPU machine
    python tools/pack_runs.py unpack OUT_DIR RUNS_DIR    # here

``pack`` writes ``runs.json`` (every run's log and result.json) and the
final weights of every run that finished, cast to float16, into
``models_<i>.pt`` files of at most 15 MiB each (the device tool returns at
most 8 files of 16 MiB). ``unpack`` writes them back as
``RUNS_DIR/<run>/final.pt`` (float16 weights: ``folds.load_network`` casts
them to float32), ``log.txt`` and ``result.json``.
"""

from __future__ import annotations

import io
import json
import os
import sys

import torch

LIMIT = 15 * 2**20


def pack(runs: str, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    meta, blobs = {}, []
    for name in sorted(os.listdir(runs)):
        d = os.path.join(runs, name)
        if not os.path.isdir(d):
            continue
        entry = {}
        for f in ("log.txt", "result.json"):
            p = os.path.join(d, f)
            if os.path.exists(p):
                with open(p) as fh:
                    entry[f] = fh.read()
        final = os.path.join(d, "final.pt")
        if os.path.exists(final):
            ck = torch.load(final, map_location="cpu")
            ck["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["model"].items()}
            buf = io.BytesIO()
            torch.save(ck, buf)
            # a uint8 tensor, not bytes: torch.save pickles bytes as latin-1 text, 1.5x larger
            blobs.append((name, torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)))
        meta[name] = entry
    with open(os.path.join(out, "runs.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    files, cur, size = [], {}, 0
    for name, blob in blobs:
        if cur and size + blob.numel() > LIMIT:
            files.append(cur)
            cur, size = {}, 0
        cur[name] = blob
        size += blob.numel()
    if cur:
        files.append(cur)
    for i, group in enumerate(files):
        torch.save(group, os.path.join(out, f"models_{i}.pt"))
        print(f"models_{i}.pt: {sorted(group)}")


def unpack(src: str, runs: str) -> None:
    with open(os.path.join(src, "runs.json")) as fh:
        meta = json.load(fh)
    for name, entry in meta.items():
        os.makedirs(os.path.join(runs, name), exist_ok=True)
        for f, text in entry.items():
            with open(os.path.join(runs, name, f), "w") as fh:
                fh.write(text)
    for f in sorted(os.listdir(src)):
        if f.startswith("models_") and f.endswith(".pt"):
            for name, blob in torch.load(os.path.join(src, f), map_location="cpu").items():
                with open(os.path.join(runs, name, "final.pt"), "wb") as fh:
                    fh.write(blob.numpy().tobytes())
                print(f"{name}/final.pt")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(sys.argv[2], sys.argv[3])
