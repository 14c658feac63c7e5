"""Command-line paths that tests/test_cli.py leaves out, each checked against the library.

- every CRF flag of ``refine`` and ``eval`` (``--iters``, ``--gaussian-*``,
  ``--bilateral-*``, ``--normalization``) reaches densecrf.refine as the
  parameter it names, alone and over a ``--params`` file;
- ``eval``'s CRF-as-RNN row, and ``eval --no-crf``, against scores
  recomputed here (the bundled models run directly, IoU in plain numpy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest

pytest.importorskip("skimage")
Image = pytest.importorskip("PIL.Image")

import densecrf  # noqa: E402
from densecrf import cli  # noqa: E402
from densecrf.params import CRFParams  # noqa: E402


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def scene(h=30, w=40, k=4, seed=0):
    """Image of k colour bands and noisy probabilities preferring the right band."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(w)[None, :] * k // w).repeat(h, 0)
    colours = rng.integers(0, 256, (k, 3))
    image = np.clip(colours[truth] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1.2, (h, w, k)) + 1.0 * (np.arange(k) == truth[..., None])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return image, (p / p.sum(-1, keepdims=True)).astype(np.float32)


# Each flag with a value unlike its default, and the CRFParams field it must set.
FLAGS = [
    (["--iters", "2"], {"n_iter": 2}),
    (["--gaussian-sxy", "1.5"], {"gaussian_sxy": 1.5}),
    (["--gaussian-compat", "7"], {"gaussian_compat": 7.0}),
    (["--gaussian-compat", "none"], {"gaussian_compat": None}),
    (["--bilateral-sxy", "9"], {"bilateral_sxy": 9.0}),
    (["--bilateral-srgb", "4"], {"bilateral_srgb": 4.0}),
    (["--bilateral-srgb", "4,20,60"], {"bilateral_srgb": [4.0, 20.0, 60.0]}),
    (["--bilateral-compat", "2.5"], {"bilateral_compat": 2.5}),
    (["--bilateral-compat", "none"], {"bilateral_compat": None}),
    (["--normalization", "before"], {"normalization": "before"}),
    (["--normalization", "after"], {"normalization": "after"}),
    (["--normalization", "none"], {"normalization": "none"}),
]


@pytest.mark.parametrize("flags, fields", FLAGS)
def test_refine_flag_reaches_refine(tmp_path, capsys, flags, fields):
    image, probs = scene()
    Image.fromarray(image).save(tmp_path / "im.png")
    np.save(tmp_path / "p.npy", probs)
    rc, _, err = run(capsys, "refine", tmp_path / "im.png", tmp_path / "p.npy", "-o", tmp_path / "out", *flags)
    assert rc == 0, err
    got = np.load(tmp_path / "out.npy")
    want = densecrf.refine(image, probs, params=dataclasses.replace(CRFParams(), **fields))
    # the same native call with the same parameters: the same bits
    assert np.array_equal(got, want)
    # and the flag matters: the defaults give another answer
    assert not np.array_equal(got, densecrf.refine(image, probs))


def test_flags_override_a_params_file(tmp_path, capsys):
    image, probs = scene(seed=1)
    Image.fromarray(image).save(tmp_path / "im.png")
    np.save(tmp_path / "p.npy", probs)
    base = CRFParams(
        n_iter=3, gaussian_sxy=2.0, bilateral_sxy=20.0, bilateral_srgb=6.0, bilateral_compat=4.0, normalization="after"
    )
    base.save(tmp_path / "p.json")
    rc, _, err = run(
        capsys,
        "refine",
        tmp_path / "im.png",
        tmp_path / "p.npy",
        "-o",
        tmp_path / "out",
        "--params",
        tmp_path / "p.json",
        "--bilateral-srgb",
        "11",
        "--normalization",
        "symmetric",
    )
    assert rc == 0, err
    want = densecrf.refine(
        image, probs, params=dataclasses.replace(base, bilateral_srgb=11.0, normalization="symmetric")
    )
    assert np.array_equal(np.load(tmp_path / "out.npy"), want)
    assert json.loads((tmp_path / "p.json").read_text())["normalization"] == "after"  # the file is not modified


# -- eval ---------------------------------------------------------------------------
def fake_camvid(root, n=3, h=36, w=48, seed=0):
    """A CamVid-like val/ and valannot/ of small street-like frames (labels 0..10, 11 = unlabelled)."""
    from densecrf.models.camvid import PALETTE

    rng = np.random.default_rng(seed)
    os.makedirs(root / "val"), os.makedirs(root / "valannot")
    frames = []
    for i in range(n):
        labels = np.zeros((h, w), np.uint8)
        labels[h // 2 :] = 3
        labels[h // 3 : h // 2, rng.integers(0, w // 2) :] = 8
        labels[h // 2 :, : w // 5] = 4
        labels[0, :3] = 11
        image = np.clip(PALETTE[labels].astype(float) + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "val" / f"f{i:03d}.png")
        Image.fromarray(labels, mode="L").save(root / "valannot" / f"f{i:03d}.png")
        frames.append((image, labels.astype(np.int64)))
    return frames


def mean_iou(preds, truths, n=11, ignore=11):
    """Mean IoU (%) over the classes present in either map, one confusion matrix for all frames; plain numpy."""
    conf = np.zeros((n, n), np.int64)
    for p, t in zip(preds, truths, strict=True):
        keep = t != ignore
        conf += np.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    return 100 * float(np.mean(tp[union > 0] / union[union > 0]))


def table_row(text, name):
    m = re.search(rf"^{re.escape(name)}\s+(.*)$", text, re.M)
    assert m, text
    return [float(v) for v in m.group(1).split()]


def _net_inputs(image):
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0


def test_eval_crf_as_rnn_row_and_no_crf(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from densecrf.models import CRF_PARAMS, NET_SIZE, pretrained
    from densecrf.models.deeplab import logits_at_size

    frames = fake_camvid(tmp_path / "cv")
    net, model = pretrained(), pretrained(crf=True)
    truths = [t for _, t in frames]
    with torch.no_grad():
        probs = [
            torch.softmax(logits_at_size(net, _net_inputs(im), NET_SIZE), 1)[0].permute(1, 2, 0).numpy()
            for im, _ in frames
        ]
        rnn = [model(_net_inputs(im), output="crf")[0].argmax(0).numpy() for im, _ in frames]
    want_net = mean_iou([p.argmax(-1) for p in probs], truths)
    want_crf = mean_iou(
        [densecrf.refine(im, p, params=CRF_PARAMS).argmax(-1) for (im, _), p in zip(frames, probs, strict=True)], truths
    )
    want_rnn = mean_iou(rnn, truths)

    rc, out, err = run(capsys, "eval", tmp_path / "cv", "--no-progress")
    assert rc == 0, err
    net_row = table_row(out, "mean IoU")
    assert len(net_row) == 3, out  # network, network + dense CRF, CRF-as-RNN
    # printed to 0.1: within half a unit (and the same computation on the same machine)
    for got, want in zip(net_row, (want_net, want_crf, want_rnn), strict=True):
        assert abs(got - want) <= 0.05 + 1e-9, (out, want_net, want_crf, want_rnn)
    assert "CRF-as-RNN" in out

    rc, out, err = run(capsys, "eval", tmp_path / "cv", "--no-progress", "--no-crf")
    assert rc == 0, err
    row = table_row(out, "mean IoU")
    assert len(row) == 2, out  # network, CRF-as-RNN: no dense CRF column
    assert "dense CRF" not in out
    # printed to 0.1: half a unit (+1e-9 for the float comparison of the printed value)
    assert abs(row[0] - want_net) <= 0.05 + 1e-9 and abs(row[1] - want_rnn) <= 0.05 + 1e-9, out

    rc, out, err = run(capsys, "eval", tmp_path / "cv", "--no-progress", "--no-crf", "--no-crf-rnn")
    assert rc == 0, err
    assert len(table_row(out, "mean IoU")) == 1 and "CRF-as-RNN" not in out, out


@pytest.mark.parametrize(
    "flags, fields",
    [
        (["--normalization", "after", "--iters", "2"], {"normalization": "after", "n_iter": 2}),
        (["--gaussian-compat", "none", "--bilateral-srgb", "3"], {"gaussian_compat": None, "bilateral_srgb": 3.0}),
    ],
)
def test_eval_crf_flags_reach_refine(tmp_path, capsys, flags, fields):
    # eval --probs --params FILE: the dense CRF row is the maps refined with the flags over the file's parameters
    rng = np.random.default_rng(4)
    frames = fake_camvid(tmp_path / "cv", n=2)
    os.makedirs(tmp_path / "maps")
    probs = []
    for i, (_, t) in enumerate(frames):
        logits = rng.normal(0, 1.5, t.shape + (11,)) + 2.0 * (np.arange(11) == np.minimum(t, 10)[..., None])
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
        np.save(tmp_path / "maps" / f"f{i:03d}.npy", p)
        probs.append(p)
    base = CRFParams(n_iter=4, gaussian_sxy=2.0, bilateral_sxy=25.0, bilateral_srgb=8.0, bilateral_compat=5.0)
    base.save(tmp_path / "p.json")
    params = dataclasses.replace(base, **fields)
    truths = [t for _, t in frames]
    want = mean_iou(
        [densecrf.refine(im, p, params=params).argmax(-1) for (im, _), p in zip(frames, probs, strict=True)], truths
    )
    rc, out, err = run(
        capsys,
        "eval",
        tmp_path / "cv",
        "--no-progress",
        "--probs",
        tmp_path / "maps",
        "--params",
        tmp_path / "p.json",
        *flags,
    )
    assert rc == 0, err
    net, crf = table_row(out, "mean IoU")
    # printed to 0.1: half a unit, as above
    assert abs(net - mean_iou([p.argmax(-1) for p in probs], truths)) <= 0.05 + 1e-9, out
    assert abs(crf - want) <= 0.05 + 1e-9, (out, want)
