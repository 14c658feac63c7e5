"""The command line end to end: demo, refine, eval, train, bench, and its one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

import densecrf  # noqa: E402
from densecrf import cli, io  # noqa: E402
from densecrf.cli import demo  # noqa: E402
from densecrf.cli import eval as eval_cmd  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid")


def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def scene(h=24, w=32, k=4, seed=0):
    """A small image of k flat vertical bands and noisy probabilities that prefer the right band."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(w)[None, :] * k // w).repeat(h, 0)
    colours = rng.integers(0, 256, (k, 3))
    image = np.clip(colours[truth] + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1, (h, w, k)) + 1.5 * (np.arange(k) == truth[..., None])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return image, truth, (probs / probs.sum(-1, keepdims=True)).astype(np.float32)


def save_png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def palette_labels(path):
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im, dtype=np.int64)


# -- refine --------------------------------------------------------------------------
def test_refine_npy_writes_palette_png_equal_to_argmax(tmp_path, capsys):
    image, truth, probs = scene()
    ip, pp = save_png(tmp_path / "im.png", image), tmp_path / "p.npy"
    np.save(pp, probs)
    rc, out, err = run(capsys, "refine", ip, pp, "-o", tmp_path / "out")
    assert rc == 0, err
    q = np.load(tmp_path / "out.npy")
    assert q.shape == probs.shape and q.dtype == np.float32
    labels = palette_labels(tmp_path / "out.png")
    np.testing.assert_array_equal(labels, q.argmax(-1))
    # Same as the library call with the classic parameters: deterministic, so bit-identical.
    np.testing.assert_array_equal(q, densecrf.refine(image, probs))
    assert (labels == truth).mean() > (probs.argmax(-1) == truth).mean()
    assert "wrote" in out


@pytest.mark.parametrize("name", ["res.png", "res.npy"])
def test_refine_output_name_gives_both_files(tmp_path, capsys, name):
    image, _, probs = scene(8, 9, 3)
    ip, pp = save_png(tmp_path / "im.png", image), tmp_path / "p.npy"
    np.save(pp, probs)
    assert run(capsys, "refine", ip, pp, "-o", tmp_path / name)[0] == 0
    assert (tmp_path / "res.png").exists() and (tmp_path / "res.npy").exists()


def test_refine_label_png(tmp_path, capsys):
    image, truth, _ = scene(k=3)
    noisy = truth.copy()
    noisy[5:8, 3:6] = (noisy[5:8, 3:6] + 1) % 3  # a blob of wrong labels inside a band
    ip, lp = save_png(tmp_path / "im.png", image), save_png(tmp_path / "lab.png", noisy.astype(np.uint8), "L")
    before = digest(lp)
    rc, _, err = run(
        capsys, "refine", ip, lp, "--n-labels", 3, "--gt-prob", 0.6, "-o", tmp_path / "o.png", "--palette", "camvid"
    )
    assert rc == 0, err
    q = np.load(tmp_path / "o.npy")
    labels = palette_labels(tmp_path / "o.png")
    np.testing.assert_array_equal(labels, q.argmax(-1))
    expected = densecrf.unary_from_labels(noisy, 3, gt_prob=0.6)
    p = np.exp(-expected).reshape(*noisy.shape, 3)
    np.testing.assert_array_equal(q, densecrf.refine(image, p / p.sum(-1, keepdims=True)))
    assert (labels == truth).mean() > (noisy == truth).mean()
    assert digest(lp) == before
    with Image.open(tmp_path / "o.png") as im:  # the CamVid colours
        assert im.getpalette()[:6] == [128, 128, 128, 128, 0, 0]


def test_refine_integer_npy_labels_and_unknown(tmp_path, capsys):
    image, truth, _ = scene(k=3)
    labels = truth.astype(np.int64)
    labels[:, :4] = 255
    ip, lp = save_png(tmp_path / "im.png", image), tmp_path / "lab.npy"
    np.save(lp, labels)
    rc, _, err = run(capsys, "refine", ip, lp, "--n-labels", 3, "--unknown", 255, "-o", tmp_path / "o")
    assert rc == 0, err
    assert palette_labels(tmp_path / "o.png").max() < 3


def test_params_file_used_and_overridden(tmp_path, capsys):
    image, _, probs = scene()
    ip, pp = save_png(tmp_path / "im.png", image), tmp_path / "p.npy"
    np.save(pp, probs)
    spec = {
        "format": "densecrf-params",
        "version": 1,
        "n_iter": 3,
        "gaussian": {"sxy": 2.0, "compat": 1.0},
        "bilateral": {"sxy": 20.0, "srgb": 9.0, "compat": 4.0},
    }
    (tmp_path / "p.json").write_text(json.dumps(spec))
    before = digest(tmp_path / "p.json")
    assert run(capsys, "refine", ip, pp, "-o", tmp_path / "a", "--params", tmp_path / "p.json")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), densecrf.refine(image, probs, params=spec))
    rc, out, _ = run(
        capsys,
        "refine",
        ip,
        pp,
        "-o",
        tmp_path / "b",
        "--params",
        tmp_path / "p.json",
        "--iters",
        1,
        "--bilateral-compat",
        "none",
    )
    assert rc == 0 and "1 iterations" in out
    over = dict(spec, n_iter=1, bilateral={"sxy": 20.0, "srgb": 9.0, "compat": None})
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), densecrf.refine(image, probs, params=over))
    assert digest(tmp_path / "p.json") == before


def test_grey_and_rgba_images_are_converted(tmp_path, capsys):
    image, _, probs = scene(8, 9, 3)
    np.save(tmp_path / "p.npy", probs)
    grey = save_png(tmp_path / "g.png", image[..., 0], "L")
    rgba = save_png(tmp_path / "a.png", np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]), "RGBA")
    for ip in (grey, rgba):
        assert run(capsys, "refine", ip, tmp_path / "p.npy", "-o", tmp_path / "o")[0] == 0
    np.testing.assert_array_equal(io.read_image(rgba), image)


# -- demo ----------------------------------------------------------------------------
def test_demo_writes_figure(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "demo.png"
    rc, text, err = run(capsys, "demo", "-o", out)
    assert rc == 0, err
    with Image.open(out) as im:
        w, h = demo.DEMO_FIGSIZE
        assert im.size == (round(w * demo.DEMO_DPI), round(h * demo.DEMO_DPI))
    for stage in ("network (240 x 180)", "dense CRF", "figure", "total"):
        assert stage in text
    assert re.search(r"network:\s+pixel accuracy \d+\.\d %", text)
    from densecrf import models

    if not os.path.exists(models.CRF_WEIGHTS):
        assert "CRF-as-RNN skipped" in text


def _tiny_crf_checkpoint(path):
    torch = pytest.importorskip("torch")
    from densecrf.models import DeepLabCRF

    torch.manual_seed(0)
    args = {"width": 4, "size": [60, 45], "crf_iter": 2, "crf_spatial": [3.0, 1.0], "crf_bilateral": [40.0, 13.0, 2.0]}
    model = DeepLabCRF(
        11,
        4,
        2,
        net_size=(60, 45),
        spatial_sxy=3.0,
        spatial_weight=1.0,
        bilateral_sxy=40.0,
        bilateral_srgb=13.0,
        bilateral_weight=2.0,
        per_class_weights=True,
    ).eval()
    torch.save({"model": model.state_dict(), "args": args}, path)
    return model


def test_pretrained_crf_from_checkpoint(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    from densecrf import models

    ref = _tiny_crf_checkpoint(tmp_path / "crf.pt")
    with pytest.raises(FileNotFoundError, match="not bundled"):
        models.pretrained(crf=True, path=str(tmp_path / "absent.pt"))
    net = models.pretrained(crf=True, path=str(tmp_path / "crf.pt"))
    assert isinstance(net, models.DeepLabCRF) and not net.training and net.net_size == (60, 45)
    x = torch.rand(1, 3, 30, 40)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)  # same weights, same CPU kernels: identical

    # The demo picks the CRF-as-RNN model up as soon as the file is there.
    monkeypatch.setattr(models, "CRF_WEIGHTS", str(tmp_path / "crf.pt"))
    threads = torch.get_num_threads()
    rc, text, err = run(capsys, "demo", "-o", tmp_path / "d.png")
    assert rc == 0, err
    assert torch.get_num_threads() == threads  # the networks' one-thread setting is undone
    assert re.search(r"CRF-as-RNN:\s+pixel accuracy", text) and "skipped" not in text


# -- eval ----------------------------------------------------------------------------
def fake_camvid(root, split="val", n=3, h=36, w=48, seed=0):
    """A CamVid-like folder: SPLIT/*.png images and SPLITannot/*.png labels 0..11."""
    rng = np.random.default_rng(seed)
    os.makedirs(root / split), os.makedirs(root / (split + "annot"))
    from densecrf.models.camvid import PALETTE

    for i in range(n):
        labels = np.zeros((h, w), np.uint8)
        labels[h // 2 :] = 3  # road below
        labels[: h // 3] = 0  # sky above
        labels[h // 3 : h // 2, rng.integers(0, w // 2) :] = 8  # a car
        labels[0, 0] = 11  # one unlabelled pixel
        image = np.clip(PALETTE[labels].astype(float) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        save_png(root / split / f"f{i:03d}.png", image)
        save_png(root / (split + "annot") / f"f{i:03d}.png", labels, "L")
    return root


def _row(text, name):
    m = re.search(rf"^{name}\s+(.*)$", text, re.M)
    assert m, text
    return [float(v) for v in m.group(1).split()]


def test_eval_save_probs_round_trip(tmp_path, capsys):
    pytest.importorskip("torch")
    root = fake_camvid(tmp_path / "cv")
    rc, out1, err = run(capsys, "eval", root, "--save-probs", tmp_path / "maps", "--no-crf-rnn")
    assert rc == 0, err
    maps = sorted(os.listdir(tmp_path / "maps"))
    assert maps == ["f000.npy", "f001.npy", "f002.npy"]
    m = np.load(tmp_path / "maps" / "f000.npy")
    assert m.shape == (36, 48, 11) and m.dtype == np.float32
    # float32 softmax: sums to one up to a few float32 roundings over 11 terms
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
    for cls in ("Sky", "Road", "Car", "Bicyclist", "mean IoU", "pixel accuracy"):
        assert re.search(rf"^{cls}\s", out1, re.M), out1
    from densecrf import models

    # With the parameters the first run used (the bundled network's), the
    # saved maps are the network's: every figure of both rows is the same.
    rc, out2, err = run(capsys, "eval", root, "--probs", tmp_path / "maps", "--params", models.CRF_PARAMS)
    assert rc == 0, err
    assert _row(out1, "mean IoU") == _row(out2, "mean IoU")
    assert _row(out1, "pixel accuracy") == _row(out2, "pixel accuracy")
    assert "--probs evaluates another model" in out2
    # Without --params, another model's maps get the classic parameters: the network row is unchanged.
    rc, out3, err = run(capsys, "eval", root, "--probs", tmp_path / "maps")
    assert rc == 0, err
    assert _row(out1, "mean IoU")[0] == _row(out3, "mean IoU")[0]
    assert "dense CRF: 5 iterations, gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat 10" in out3


def test_eval_float16_maps_and_params(tmp_path, capsys):
    pytest.importorskip("torch")
    root = fake_camvid(tmp_path / "cv", split="test", n=2)
    (tmp_path / "p.json").write_text(json.dumps({"n_iter": 2}))
    rc, out, err = run(
        capsys,
        "eval",
        root,
        "--split",
        "test",
        "--save-probs",
        tmp_path / "m",
        "--probs-dtype",
        "float16",
        "--params",
        tmp_path / "p.json",
        "--gaussian-sxy",
        2,
        "--no-crf-rnn",
    )
    assert rc == 0, err
    assert np.load(tmp_path / "m" / "f000.npy").dtype == np.float16
    assert "dense CRF: 2 iterations, gaussian sxy 2 compat 3" in out
    # float16 maps sum to one within K * 2^-11 (half a float16 ulp near 1 per term): refine takes them.
    rc, out, err = run(capsys, "eval", root, "--split", "test", "--probs", tmp_path / "m")
    assert rc == 0, err


# -- train, bench --------------------------------------------------------------------
def test_train_passes_arguments_through(tmp_path, capsys):
    pytest.importorskip("torch")
    root = fake_camvid(tmp_path / "cv", split="train", n=2)
    fake_camvid(root, split="val", n=1, seed=1)
    rc, _, err = run(
        capsys,
        "train",
        "--data",
        root,
        "--out",
        tmp_path / "run",
        "--epochs",
        1,
        "--batch",
        2,
        "--width",
        4,
        "--size",
        48,
        36,
        "--max-batches",
        1,
    )
    assert rc == 0, err
    assert (tmp_path / "run" / "log.csv").exists() and (tmp_path / "run" / "best.pt").exists()
    rc, _, err = run(capsys, "train", "--epochs", 1)
    assert rc == 2 and "the following arguments are required: --data, --out" in err


def test_bench_small(capsys):
    rc, out, err = run(capsys, "bench", "--size", 40, 30, "--labels", 4, "--repeat", 1, "--threads", 1, 2)
    assert rc == 0, err
    for name in ("lattice build", "one filter (K=4)", "one iteration", "whole refine"):
        assert re.search(rf"^{re.escape(name)}\s+[\d.]+ ms\s+[\d.]+ ms$", out, re.M), out


def test_bench_agrees_with_pydensecrf():
    pytest.importorskip("pydensecrf.densecrf")
    from densecrf import bench

    res = bench.run(width=60, height=45, n_labels=5, repeat=1, threads=(1,), out=lambda s: None)
    assert res["pydensecrf agreement"] >= bench.AGREEMENT and "pydensecrf whole refine" in res


def test_bench_suite_missing_folder(tmp_path, capsys):
    rc, _, err = run(capsys, "bench", "--suite", tmp_path / "nope")
    assert rc == 2 and "benchmark folder not found" in err


# -- helpers -------------------------------------------------------------------------
def test_voc_palette_and_fixed_overlay_colours():
    pal = io.voc_palette()
    assert pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0] and pal[15].tolist() == [192, 128, 128]
    from densecrf.models.camvid import PALETTE

    labels = np.array([[3, 8], [8, 3]])
    black = np.zeros((2, 2, 3), np.uint8)
    rgb = demo.overlay(labels, black, PALETTE)
    # over a black image the overlay is alpha * colour; 1e-9: float64 arithmetic on values of order 1
    np.testing.assert_allclose(rgb[0, 1], 0.75 * PALETTE[8] / 255.0, atol=1e-9)
    np.testing.assert_allclose(rgb[0, 0], 0.75 * PALETTE[3] / 255.0, atol=1e-9)


def test_missing_extra_names_it(tmp_path, capsys, monkeypatch):
    image, _, probs = scene(8, 9, 3)
    ip = save_png(tmp_path / "im.png", image)
    np.save(tmp_path / "p.npy", probs)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # import fails as if Pillow were absent
    rc, _, err = run(capsys, "refine", ip, tmp_path / "p.npy", "-o", tmp_path / "o")
    assert rc == 2 and err.strip() == "densecrf refine: error: this needs pillow: pip install 'densecrf[cli]'"


# -- hostile input: one line naming the fault, no traceback, inputs untouched ------------
def _files(t):
    image, _, probs = scene(6, 7, 4)
    save_png(t / "im.png", image)
    np.save(t / "p.npy", probs)
    return t


def _write(path, data):
    with open(path, "wb") as fh:
        fh.write(data if isinstance(data, bytes) else data.encode())
    return path


HOSTILE = [
    ("missing image", lambda t: ("refine", t / "no.png", t / "p.npy", "-o", t / "o"), r"IMAGE not found: .*no\.png"),
    ("missing probs", lambda t: ("refine", t / "im.png", t / "no.npy", "-o", t / "o"), r"PROBS not found: .*no\.npy"),
    ("image is a folder", lambda t: ("refine", t, t / "p.npy", "-o", t / "o"), r"IMAGE is a folder"),
    (
        "not an image",
        lambda t: ("refine", _write(t / "x.png", "hello"), t / "p.npy", "-o", t / "o"),
        r"IMAGE .*x\.png is not a readable image file",
    ),
    (
        "probs png not an image",
        lambda t: ("refine", t / "im.png", _write(t / "l.png", "hello"), "-o", t / "o"),
        r"PROBS .*l\.png is not a readable image file",
    ),
    (
        "npy wrong shape",
        lambda t: (
            np.save(t / "q.npy", np.ones((6, 7, 2, 2), np.float32)),
            ("refine", t / "im.png", t / "q.npy", "-o", t / "o"),
        )[1],
        r"must be \[H, W, K\] probabilities .* shape \(6, 7, 2, 2\)",
    ),
    (
        "npy integer probs",
        lambda t: (
            np.save(t / "q.npy", np.ones((6, 7, 2), np.int32)),
            ("refine", t / "im.png", t / "q.npy", "-o", t / "o"),
        )[1],
        r"floating-point probabilities, got dtype int32",
    ),
    (
        "size mismatch",
        lambda t: (np.save(t / "q.npy", scene(5, 7, 4)[2]), ("refine", t / "im.png", t / "q.npy", "-o", t / "o"))[1],
        r"shape \(5, 7, 4\) but the image is 6 x 7",
    ),
    (
        "label png size mismatch",
        lambda t: (
            "refine",
            t / "im.png",
            save_png(t / "l.png", np.zeros((5, 7), np.uint8), "L"),
            "--n-labels",
            3,
            "-o",
            t / "o",
        ),
        r"5 x 7 label map but the image is 6 x 7",
    ),
    (
        "label png is RGB",
        lambda t: (
            "refine",
            t / "im.png",
            save_png(t / "l.png", np.zeros((6, 7, 3), np.uint8)),
            "--n-labels",
            3,
            "-o",
            t / "o",
        ),
        r"one class index per pixel.*RGB",
    ),
    (
        "label out of range",
        lambda t: (
            "refine",
            t / "im.png",
            save_png(t / "l.png", np.full((6, 7), 5, np.uint8), "L"),
            "--n-labels",
            3,
            "-o",
            t / "o",
        ),
        r"labels in \[5, 5\], outside \[0, 3\)",
    ),
    (
        "gt-prob out of range",
        lambda t: (
            "refine",
            t / "im.png",
            save_png(t / "l.png", np.zeros((6, 7), np.uint8), "L"),
            "--n-labels",
            3,
            "--gt-prob",
            1.5,
            "-o",
            t / "o",
        ),
        r"gt_prob must be in \(0, 1\)",
    ),
    (
        "probs not summing to one",
        lambda t: (
            np.save(t / "q.npy", np.full((6, 7, 4), 0.5, np.float32)),
            ("refine", t / "im.png", t / "q.npy", "-o", t / "o"),
        )[1],
        r"probs must sum to one.*sums to 2",
    ),
    (
        "params file missing",
        lambda t: ("refine", t / "im.png", t / "p.npy", "-o", t / "o", "--params", t / "no.json"),
        r"params file not found: .*no\.json",
    ),
    (
        "params bad JSON",
        lambda t: ("refine", t / "im.png", t / "p.npy", "-o", t / "o", "--params", _write(t / "b.json", "{")),
        r"b\.json is not valid JSON",
    ),
    (
        "params bad value",
        lambda t: (
            "refine",
            t / "im.png",
            t / "p.npy",
            "-o",
            t / "o",
            "--params",
            _write(t / "b.json", '{"gaussian": {"sxy": -1}}'),
        ),
        r"params file .*b\.json: gaussian sxy must be a positive number, got -1",
    ),
    (
        "params not an object",
        lambda t: ("refine", t / "im.png", t / "p.npy", "-o", t / "o", "--params", _write(t / "b.json", "[1, 2]")),
        r"must be a JSON object, got list",
    ),
    (
        "output folder missing",
        lambda t: ("refine", t / "im.png", t / "p.npy", "-o", t / "no" / "o"),
        r"output folder does not exist",
    ),
    ("eval DATA_DIR missing", lambda t: ("eval", t / "nope"), r"DATA_DIR not found: .*nope"),
    ("eval DATA_DIR without val/", lambda t: ("eval", t), r"has no val/ and valannot/ folders"),
    (
        "eval --probs folder missing",
        lambda t: ("eval", fake_camvid(t / "cv", n=1), "--probs", t / "nope"),
        r"--probs folder not found",
    ),
    (
        "eval --probs map missing",
        lambda t: (os.makedirs(t / "m"), ("eval", fake_camvid(t / "cv", n=1), "--probs", t / "m"))[1],
        r"probability map of f000 not found: .*f000\.npy",
    ),
    (
        "eval --probs map wrong shape",
        lambda t: (
            os.makedirs(t / "m"),
            np.save(t / "m" / "f000.npy", np.ones((36, 48, 4), np.float32)),
            ("eval", fake_camvid(t / "cv", n=1), "--probs", t / "m"),
        )[2],
        r"f000\.npy has shape \(36, 48, 4\), expected \(36, 48, 11\)",
    ),
    (
        "eval label out of range",
        lambda t: (
            fake_camvid(t / "cv", n=1),
            save_png(t / "cv" / "valannot" / "f000.png", np.full((36, 48), 40, np.uint8), "L"),
            ("eval", t / "cv", "--probs", t),
        )[2],
        r"f000\.png has label 40 outside \[0, 11\)",
    ),
    (
        "eval image and labels differ in size",
        lambda t: (
            fake_camvid(t / "cv", n=1),
            save_png(t / "cv" / "valannot" / "f000.png", np.zeros((10, 48), np.uint8), "L"),
            ("eval", t / "cv", "--probs", t),
        )[2],
        r"is 36 x 48 but its labels are 10 x 48",
    ),
    (
        "eval negative --limit",
        lambda t: ("eval", fake_camvid(t / "cv", n=1), "--limit", -1),
        r"--limit must be >= 0, got -1",
    ),
    ("demo output folder missing", lambda t: ("demo", "-o", t / "no" / "d.png"), r"output folder does not exist"),
    (
        "demo bad params",
        lambda t: ("demo", "-o", t / "d.png", "--params", _write(t / "b.json", '{"n_iter": -2}')),
        r"n_iter must be a non-negative integer, got -2",
    ),
    ("bench bad size", lambda t: ("bench", "--size", 1, 5), r"--size needs W, H >= 2"),
    (
        "train data folder missing",
        lambda t: ("train", "--data", t / "nope", "--out", t / "o", "--epochs", 1),
        r"has no train/ and trainannot/ folders",
    ),
]


@pytest.mark.parametrize("name,argv,match", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile(tmp_path, capsys, name, argv, match):
    if name.startswith(("eval", "train")):
        pytest.importorskip("torch")
    args = argv(_files(tmp_path))
    snapshot = {p: digest(p) for p in map(str, tmp_path.rglob("*")) if os.path.isfile(p)}
    rc, out, err = run(capsys, *args)
    assert rc == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"densecrf {args[0]}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    # Bad input never modifies what was passed, and no output is left behind.
    after = {p: digest(p) for p in map(str, tmp_path.rglob("*")) if os.path.isfile(p)}
    assert after == snapshot


def test_models_package_imports_without_torch(tmp_path):
    # `eval --probs` and the demo's first checks need the CamVid constants, not torch.
    # (cwd: outside the source tree, whose densecrf/ has no compiled extension in a non-editable install)
    import subprocess

    code = "import sys, densecrf.models, densecrf.models.camvid; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_console_entry_flushes_before_its_hard_exit(tmp_path):
    # run() ends the process with os._exit: piped output must still arrive, and errors keep their status.
    import subprocess

    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "densecrf",
            "bench",
            "--size",
            "30",
            "20",
            "--repeat",
            "1",
            "--threads",
            "1",
            "--no-pydensecrf",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.rstrip().splitlines()[-1].startswith("whole refine")
    bad = subprocess.run(
        [sys.executable, "-m", "densecrf", "refine", "nope.png", "p.npy", "-o", "o"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and bad.stderr == "densecrf refine: error: IMAGE not found: nope.png\n"


# -- argparse: one line, status 2; help in full ---------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ("refine", "im.png", "p.npy", "-o", "o", "--frobnicate"),
        ("refine",),
        ("demo", "--iters", "five"),
        ("fit", "a", "b"),
        ("bench", "--size", "1"),
        ("nosuchcommand",),
        (),
    ],
)
def test_argparse_errors_are_one_line_with_status_2(capsys, argv):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    prog = "densecrf" + (f" {argv[0]}" if argv and argv[0] != "nosuchcommand" else "")
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "usage:" not in err and out == ""


def test_train_argument_errors_are_one_line(capsys):
    pytest.importorskip("torch")
    rc, _, err = run(capsys, "train", "--epochs", "x")
    assert rc == 2
    assert err.strip().splitlines() == [
        "densecrf train: error: argument --epochs: invalid int value: 'x' (see densecrf train --help)"
    ]


@pytest.mark.parametrize("command", ["demo", "refine", "eval", "fit", "bench"])
def test_help_is_whole_and_exits_0(capsys, command):
    with pytest.raises(SystemExit) as info:  # argparse's own --help exit, caught by main
        cli.build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    rc, out, err = run(capsys, command, "--help")
    assert rc == 0 and err == ""
    assert out.startswith(f"usage: densecrf {command}") and "--help" in out and len(out.splitlines()) > 5


def test_top_level_help_lists_every_command(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    listed = re.findall(r"^    (\w+)\s", out, re.M)
    assert listed == ["demo", "refine", "eval", "fit", "train", "bench"], out
    assert "demo, refine, eval, fit, train, bench" in out


def test_fit_help_shows_defaults(capsys):
    rc, out, _ = run(capsys, "fit", "--help")
    assert rc == 0
    text = " ".join(out.split())  # argparse wraps the help at the terminal's width
    for flag, default in (
        ("--search", "gradient"),
        ("--holdout", "0.3"),
        ("--compat", "potts"),
        ("--loss", "ce"),
        ("--crop", "160"),
        ("--iters", "5"),
        ("--steps", "80"),
        ("--batch", "2"),
        ("--lr", "0.03"),
        ("--n-random", "24"),
        ("--seed", "0"),
    ):
        assert re.search(rf"{re.escape(flag)} \S+ .*?\(default: {re.escape(default)}\)", text), flag


# -- eval --probs: another model's maps get the classic parameters ------------------------------
def _random_maps(folder, names, h=36, w=48, k=11, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    for n in names:
        p = rng.dirichlet(np.ones(k), (h, w)).astype(np.float32)
        np.save(folder / f"{n}.npy", p)
    return folder


def test_eval_probs_uses_classic_parameters_unless_params(tmp_path, capsys):
    from densecrf import models

    assert os.path.exists(models.CRF_PARAMS)  # the case this test is about: fitted parameters are bundled
    root = fake_camvid(tmp_path / "cv", n=2)
    maps = _random_maps(tmp_path / "maps", ["f000", "f001"])
    rc, out, err = run(capsys, "eval", root, "--probs", maps)
    assert rc == 0, err
    assert "dense CRF: 5 iterations, gaussian sxy 3 compat 3, bilateral sxy 80 srgb 13 compat 10" in out
    assert "fitted" not in out and "classic parameters" in out
    # The figures are those of refine() with the classic parameters, computed here independently.
    from densecrf.metrics import SegmentationMetrics

    m = SegmentationMetrics(11, ignore_index=11)
    for n in ("f000", "f001"):
        image = np.asarray(Image.open(root / "val" / f"{n}.png").convert("RGB"))
        truth = np.asarray(Image.open(root / "valannot" / f"{n}.png"), dtype=np.int64)
        m.update(densecrf.refine(image, np.load(maps / f"{n}.npy")).argmax(-1), truth)
    assert _row(out, "mean IoU")[1] == round(100 * m.mean_iou(), 1)
    # --params FILE replaces them.
    (tmp_path / "p.json").write_text(json.dumps({"n_iter": 2, "gaussian": {"sxy": 4.0, "compat": 1.0}}))
    rc, out, err = run(capsys, "eval", root, "--probs", maps, "--params", tmp_path / "p.json")
    assert rc == 0, err
    assert "dense CRF: 2 iterations, gaussian sxy 4 compat 1" in out


def test_eval_defaults_per_source_and_help_says_so(capsys):
    from densecrf import models
    from densecrf.params import CRFParams, as_params

    args = cli.build_parser().parse_args(["eval", "data"])
    assert eval_cmd.eval_params(args) == as_params(models.CRF_PARAMS)  # the bundled network: its fitted ones
    args = cli.build_parser().parse_args(["eval", "data", "--probs", "maps"])
    assert eval_cmd.eval_params(args) == CRFParams()  # another model's maps: the classic ones
    args = cli.build_parser().parse_args(["eval", "data", "--probs", "maps", "--no-crf"])
    assert eval_cmd.eval_params(args) is None
    rc, out, _ = run(capsys, "eval", "--help")
    assert rc == 0
    text = " ".join(out.split())
    assert "with --probs (another model's maps), pydensecrf's classic parameters" in text
    assert "for the bundled network, the parameters fitted to it" in text


# -- fit: folders matched by stem ---------------------------------------------------------------
def _fit_folders(root, n=4, extra_labels=0, extra_probs=0):
    dirs = [root / d for d in ("img", "prob", "lab")]
    for d in dirs:
        d.mkdir(parents=True)
    for i in range(n + max(extra_labels, extra_probs)):
        image, truth, probs = scene(16, 20, 3, seed=i)
        if i < n:
            save_png(dirs[0] / f"f{i}.png", image)
        if i < n + extra_probs:
            np.save(dirs[1] / f"f{i}.npy", probs)
        if i < n + extra_labels:
            save_png(dirs[2] / f"f{i}.png", truth.astype(np.uint8), "L")
    return [str(d) for d in dirs]


def test_fit_matches_a_larger_labels_folder_by_stem(tmp_path, capsys):
    img, prob, lab = _fit_folders(tmp_path, n=4, extra_labels=3, extra_probs=1)
    out = tmp_path / "p.json"
    rc, text, err = run(capsys, "fit", img, prob, lab, "-o", out, "--search", "grid", "--holdout", "0.5", "-q")
    assert rc == 0, err
    assert "note: 3 files of the labels folder without an image left out" in text
    assert "note: 1 file of the probs folder without an image left out" in text
    from densecrf.params import CRFParams

    assert CRFParams.load(out).info["n_images"] == 4
    from densecrf.fit import load_folders

    names, images, probs, labels = load_folders(img, prob, lab)
    assert names == ["f0", "f1", "f2", "f3"] and len(images) == len(probs) == len(labels) == 4


def test_fit_still_refuses_an_image_without_labels(tmp_path, capsys):
    img, prob, lab = _fit_folders(tmp_path, n=3)
    os.remove(os.path.join(lab, "f1.png"))
    rc, _, err = run(capsys, "fit", img, prob, lab, "-o", tmp_path / "p.json", "--search", "grid")
    assert rc == 2
    assert err.strip() == (
        "densecrf fit: error: unmatched file names: 'f1' is in images but not in labels "
        "(1 of 3 images have no labels file)"
    )
    assert not (tmp_path / "p.json").exists()


def test_library_import_loads_neither_cli_nor_torch(tmp_path):
    # The library never imports the command line; the command line itself imports torch only in the
    # commands that run a network (refine, fit --search grid and bench stay light).
    import subprocess

    code = (
        "import sys, densecrf; assert 'densecrf.cli' not in sys.modules, 'cli'; "
        "import densecrf.cli, densecrf.fit, densecrf.bench, densecrf.io, densecrf.models.infer; "
        "assert 'torch' not in sys.modules, 'torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_eval_progress_bar_on_request(tmp_path, capsys):
    pytest.importorskip("tqdm")
    root = fake_camvid(tmp_path / "cv", n=2)
    maps = _random_maps(tmp_path / "maps", ["f000", "f001"])
    rc, _, err = run(capsys, "eval", root, "--probs", maps, "--no-crf", "--progress")
    assert rc == 0, err
    assert "2/2" in err  # tqdm's count on stderr, forced without a terminal
    rc, _, err = run(capsys, "eval", root, "--probs", maps, "--no-crf", "--no-progress")
    assert rc == 0 and err == ""
