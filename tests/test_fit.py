"""densecrf.fit, the parameter mapping of CRFasRNN.from_params / to_params and ``densecrf fit``.

The grid and random searches, the parameter files and the command need no
torch; their tests run without it (test_runs_without_torch checks that, in
a subprocess where torch cannot be imported). Scores that fit reports about
itself are checked against scores recomputed here: densecrf.refine, then
IoU in plain numpy.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import densecrf
from conftest import PACKAGE_PARENT
from densecrf import cli
from densecrf.params import CRFParams

try:
    import torch

    from densecrf.nn import CRFasRNN
except ImportError:
    torch = CRFasRNN = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (pip install 'densecrf[torch]')")

K = 3


def scene(seed, h=32, w=36, noise=1.6, margin=1.5):
    """Image with three colour regions (a thin vertical stripe of class 2 included),
    the true labels, and noisy probabilities: the bilateral term can clean them."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2 :] = 1
    x0 = int(rng.integers(3, w // 2 - 6))
    truth[:, x0 : x0 + 3] = 2
    # Low colour contrast (20 levels): the classic srgb 13 blurs across the
    # region edges, a colour bandwidth near 4 does not: a planted optimum.
    palette = np.array([[120, 120, 120], [140, 120, 120], [120, 140, 120]])
    img = np.clip(palette[truth] + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, noise, (h, w, K))
    logits[np.arange(h)[:, None], np.arange(w)[None, :], truth] += margin
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return img, (p / p.sum(-1, keepdims=True)).astype(np.float32), truth


def dataset(n=6, **kw):
    ims, ps, labs = zip(*[scene(s, **kw) for s in range(n)], strict=True)
    return list(ims), list(ps), list(labs)


def miou(params, ims, ps, labs, idx, ignore_index=None):
    """Mean IoU over the images idx together (one confusion matrix), classes present in either map; plain numpy.

    params None (or without terms): the network's argmax; else densecrf.refine with them."""
    conf = np.zeros((K, K), np.int64)
    for i in idx:
        if params is None or (params.gaussian_compat is None and params.bilateral_compat is None):
            pred = ps[i].argmax(-1)
        else:
            pred = densecrf.refine(ims[i], ps[i], params=params).argmax(-1)
        keep = labs[i] != ignore_index if ignore_index is not None else np.ones(labs[i].shape, bool)
        conf += np.bincount(labs[i][keep] * K + pred[keep], minlength=K * K).reshape(K, K)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


def recomputed(out, ims, ps, labs, ignore_index=None):
    """The held-out scores of the candidates fit reports, recomputed from their parameters."""
    from densecrf.params import as_params

    hold = out.info["heldout_indices"]
    n_iter = out.info["settings"]["n_iter"]
    grid_best = as_params(out.info["grid_best_params"])
    return {
        "network": miou(None, ims, ps, labs, hold, ignore_index),
        "defaults": miou(CRFParams(n_iter=n_iter), ims, ps, labs, hold, ignore_index),
        "grid_best": miou(grid_best, ims, ps, labs, hold, ignore_index),
        "selected": miou(out, ims, ps, labs, hold, ignore_index),
    }


def assert_reported_scores_are_true(out, ims, ps, labs, ignore_index=None):
    """fit's reported held-out scores equal the recomputed ones (info rounds them to 6 digits: 5e-7), and the
    selected parameters score no worse than the network, the defaults and the best grid point, recomputed."""
    true = recomputed(out, ims, ps, labs, ignore_index)
    for name, value in true.items():
        assert out.info["heldout_miou"][name] == pytest.approx(value, abs=5e-7), name
    assert true["selected"] >= max(true["network"], true["defaults"], true["grid_best"])
    return true


# --------------------------------------------------------------------------
# CRFasRNN <-> CRFParams
# --------------------------------------------------------------------------
def _param_cases():
    rng = np.random.default_rng(3)
    m = rng.normal(0, 1, (K, K))
    return [
        CRFParams(),
        CRFParams(gaussian_compat=None, bilateral_sxy=30.0, bilateral_srgb=7.0, bilateral_compat=4.0),
        CRFParams(gaussian_compat=[1.0, 2.0, 0.5], bilateral_compat=[3.0, 1.0, 2.0]),
        CRFParams(gaussian_compat=m.tolist(), bilateral_compat=(m * np.array([2.0, 0.5, 1.0])).tolist()),
        CRFParams(gaussian_compat=m.tolist(), bilateral_compat=None, n_iter=3),
    ]


@needs_torch
@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("learn", [False, True])
def test_layer_from_params_equals_refine(case, dtype, learn):
    dtype = getattr(torch, dtype)
    params = _param_cases()[case]
    img, p, _ = scene(0)
    q = densecrf.refine(img, p, params=params)
    layer = CRFasRNN.from_params(params, K, learn_bandwidths=learn).to(dtype)
    logits = torch.from_numpy(np.log(np.clip(p, 1e-5, None))).permute(2, 0, 1)[None].to(dtype)
    image = torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype)
    with torch.set_grad_enabled(learn):
        z = layer(logits, image)
    qq = torch.softmax(z, 1)[0].permute(1, 2, 0).detach().numpy()
    # 5e-4: both run the same lattice (the layer in float64 for float64,
    # against refine's float32: float32 rounding apart); the graph path (learn=True)
    # normalises in Python from K 1 while the native term folds the
    # normalisation into its weights, a float32 rounding difference that
    # five iterations amplify (measured up to 7e-5). A wrong compatibility
    # orientation or sign moves Q by more than 0.1 here.
    # 1e-2 for learned bandwidths in float64: they are exp(log v), off from
    # refine's v by the float32 rounding of the stored log (~1e-8 relative);
    # the float64 lattice keeps that difference (the float32 one rounds it
    # away), and grid positions sit on simplex boundaries, so some points
    # fall into the neighbouring simplex: another, equally close
    # approximation of the Gaussian (measured up to 3.2e-3 in Q, case 1).
    np.testing.assert_allclose(qq, q, atol=1e-2 if learn and dtype == torch.float64 else 5e-4)


@needs_torch
@pytest.mark.parametrize("case", range(5))
def test_params_round_trip(case):
    params = _param_cases()[case]
    back = CRFasRNN.from_params(params, K).to_params()
    for name in ("gaussian_compat", "bilateral_compat"):
        a, b = getattr(params, name), getattr(back, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert np.ndim(a) == np.ndim(b), (name, a, b)  # Potts stays Potts, a diagonal stays a diagonal
            # 1e-6: float32 storage of the layer's weights and compatibility.
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6)
    assert back.n_iter == params.n_iter and back.normalization == params.normalization
    # 1e-6: bandwidths are stored as float32 in the layer.
    assert back.bilateral_sxy == pytest.approx(params.bilateral_sxy, rel=1e-6)
    assert back.bilateral_srgb == pytest.approx(params.bilateral_srgb, rel=1e-6)
    if params.gaussian_compat is not None:
        assert back.gaussian_sxy == pytest.approx(params.gaussian_sxy, rel=1e-6)


@needs_torch
def test_to_params_of_trained_layer_matches_layer():
    """A layer with a learned matrix and per-class weights exports per-term matrices mu diag(w_t)."""
    layer = CRFasRNN(
        K, 4, spatial_weight=1.0, bilateral_weight=2.0, bilateral_sxy=20.0, bilateral_srgb=9.0, per_class_weights=True
    )
    with torch.no_grad():
        layer.compat.copy_(torch.tensor([[-1.0, 0.3, 0.2], [0.5, -2.0, 0.1], [0.0, 0.4, -0.5]]))
        layer.weights["spatial"].copy_(torch.tensor([1.0, 2.0, 0.5]))
        layer.weights["bilateral"].copy_(torch.tensor([3.0, 0.2, 1.5]))
    params = layer.to_params()
    assert np.ndim(params.gaussian_compat) == 2
    img, p, _ = scene(1)
    logits = torch.from_numpy(np.log(np.clip(p, 1e-5, None))).permute(2, 0, 1)[None]
    with torch.no_grad():
        z = layer(logits, torch.from_numpy(img).permute(2, 0, 1)[None].float())
    qq = torch.softmax(z, 1)[0].permute(1, 2, 0).numpy()
    # 5e-4: as in test_layer_from_params_equals_refine.
    np.testing.assert_allclose(qq, densecrf.refine(img, p, params=params), atol=5e-4)


@needs_torch
def test_from_params_rejects_unshared_matrices():
    rng = np.random.default_rng(0)
    params = CRFParams(
        gaussian_compat=rng.normal(size=(K, K)).tolist(), bilateral_compat=rng.normal(size=(K, K)).tolist()
    )
    with pytest.raises(ValueError, match="shares one compatibility"):
        CRFasRNN.from_params(params, K)
    with pytest.raises(ValueError, match="for 3 labels"):
        CRFasRNN.from_params(CRFParams(gaussian_compat=[1.0, 2.0, 3.0]), 4)


# --------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------
def test_grid_finds_planted_parameters_and_scores_are_exact():
    ims, ps, labs = dataset()
    planted = CRFParams(gaussian_compat=None, bilateral_sxy=30.0, bilateral_srgb=4.0, bilateral_compat=5.0)
    useless = CRFParams(gaussian_compat=0.01, bilateral_sxy=30.0, bilateral_srgb=4.0, bilateral_compat=0.01)
    out = densecrf.fit(ims, ps, labs, search="grid", grid=[useless, planted], holdout=0.5, seed=1)
    assert len(out.info["heldout_indices"]) == 3
    assert out.info["selected"] == "grid[1]"
    assert out.bilateral_compat == 5.0 and out.gaussian_compat is None
    true = assert_reported_scores_are_true(out, ims, ps, labs)
    # The planted CRF cleans the noise: far above the network and the defaults
    # (measured over all six images: 0.40 network, 0.61 defaults, 0.96 planted).
    assert true["selected"] > true["network"] + 0.2
    assert true["selected"] > true["defaults"] + 0.1


def test_returns_no_crf_when_nothing_helps():
    """Random labels on a flat image: every CRF smooths away correct pixels; fit says no CRF."""
    rng = np.random.default_rng(0)
    ims, ps, labs = [], [], []
    for _ in range(4):
        lab = rng.integers(0, K, (20, 24))
        logits = 0.6 * np.eye(K)[lab]
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        ims.append(np.full((20, 24, 3), 128, np.uint8))
        ps.append(p.astype(np.float32))
        labs.append(lab)
    out = densecrf.fit(ims, ps, labs, search="grid", holdout=0.5)
    assert out.info["selected"] == "network" and out.info["no_crf"]
    assert out.gaussian_compat is None and out.bilateral_compat is None
    true = assert_reported_scores_are_true(out, ims, ps, labs)
    assert true["network"] == 1.0 and true["defaults"] < 1.0  # the CRF did hurt: the test can tell
    for i in range(4):
        np.testing.assert_array_equal(densecrf.refine(ims[i], ps[i], params=out).argmax(-1), labs[i])


@needs_torch
@pytest.mark.parametrize("compat,loss", [("potts", "ce"), ("diagonal", "ce+softiou"), ("matrix", "ce")])
def test_gradient_never_worse_and_inputs_untouched(compat, loss):
    ims, ps, labs = dataset(5)
    labs[0][:4] = 7  # an ignored band
    copies = [[a.copy() for a in seq] for seq in (ims, ps, labs)]
    grid = [CRFParams(gaussian_compat=1.0, bilateral_sxy=30.0, bilateral_srgb=13.0, bilateral_compat=2.0)]
    out = densecrf.fit(
        ims,
        ps,
        labs,
        ignore_index=7,
        search="gradient",
        compat=compat,
        loss=loss,
        grid=grid,
        crop=24,
        steps=4,
        batch=1,
        eval_every=2,
        holdout=0.4,
        seed=0,
    )
    s = out.info["heldout_miou"]
    assert "gradient" in s and s["selected"] >= s["gradient"]
    assert_reported_scores_are_true(out, ims, ps, labs, ignore_index=7)
    for orig, seq in zip(copies, (ims, ps, labs), strict=True):
        for a, b in zip(orig, seq, strict=True):
            np.testing.assert_array_equal(a, b)


def test_random_search_and_holdout_indices():
    ims, ps, labs = dataset(4)
    out = densecrf.fit(ims, ps, labs, search="random", n_random=3, holdout=[0, 2], seed=5)
    assert out.info["heldout_indices"] == [0, 2]
    assert out.info["settings"]["grid_points"] == 3
    true = assert_reported_scores_are_true(out, ims, ps, labs)
    assert true["selected"] == max(true["network"], true["defaults"], true["grid_best"])


def _without_times(params):
    d = params.to_dict()
    d["info"] = {k: v for k, v in d["info"].items() if "time" not in k}
    return d


@pytest.mark.parametrize("search", ["grid", "random", pytest.param("gradient", marks=needs_torch)])
def test_same_inputs_same_parameters(search):
    # docs/fit.md: fit is deterministic (the same data, settings and seed
    # give the same parameters, bit for bit); only the timings may differ.
    ims, ps, labs = dataset(4)
    kw = {"steps": 4, "crop": 24, "batch": 1, "eval_every": 2} if search == "gradient" else {}
    runs = [densecrf.fit(ims, ps, labs, search=search, n_random=3, holdout=0.5, seed=3, **kw) for _ in range(2)]
    assert _without_times(runs[0]) == _without_times(runs[1])
    assert runs[0].info["search"] == search


def test_runs_without_torch():
    # The grid and random searches, the parameter files and `densecrf fit`
    # with --search grid need no torch: this module's tests in a Python
    # where `import torch` fails. Those that need torch skip; the others
    # must pass, and the gradient search must say that it needs torch.
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import densecrf, pytest\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "rc = pytest.main(['-q', '-p', 'no:cacheprovider', '-k', 'not without_torch', sys.argv[1]])\n"
        "from test_fit import dataset\n"
        "try:\n"
        "    densecrf.fit(*dataset(4), search='gradient', steps=1)\n"
        "except ImportError as exc:\n"
        "    print('gradient search:', exc)\n"
        "sys.exit(rc)\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_PARENT, here, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, "-c", code, os.path.abspath(__file__)],
        capture_output=True,
        text=True,
        env=env,
        cwd=here,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = res.stdout.strip().splitlines()
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped|failed|error)", res.stdout)}
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, summary[-3:]
    assert counts["passed"] >= 20 and counts["skipped"] >= 20, counts  # the torch-free part ran
    # the library's own message (before: Python's bare "import of torch halted" after the whole grid search)
    assert "gradient search: fit(search='gradient') needs torch" in res.stdout


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda i, p, lab: (i[:1], p[:1], lab[:1]), "at least 2"),
        (lambda i, p, lab: (i, p, lab[:2]), "same length"),
        (lambda i, p, lab: (i, p[:1] + [p[1][..., :2]] + p[2:], lab), r"probs\[1\] has 2 classes"),
        (lambda i, p, lab: (i[:2] + [i[2][:5]] + i[3:], p, lab), r"images\[2\] must have shape \(32, 36, 3\)"),
        (lambda i, p, lab: (i, p, lab[:1] + [lab[1][:, :3]] + lab[2:]), r"labels\[1\] must have shape \(32, 36\)"),
        (lambda i, p, lab: (i, p, lab[:3] + [lab[3] + 5]), r"labels\[3\] has value [5-7] outside 0..2"),
        (lambda i, p, lab: (i, p, lab[:1] + [lab[1].astype(float)] + lab[2:]), r"labels\[1\] must be integers"),
        (lambda i, p, lab: (i, [p[0][..., 0]] + p[1:], lab), r"probs\[0\] must have shape \[H, W, K\]"),
    ],
)
def test_hostile_inputs(mutate, match):
    ims, ps, labs = dataset(4)
    with pytest.raises(ValueError, match=match):
        densecrf.fit(*mutate(ims, ps, labs), search="grid")


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"search": "adam"}, "search"),
        ({"compat": "full"}, "compat"),
        ({"loss": "dice"}, "loss"),
        ({"holdout": 1.5}, "holdout"),
        ({"holdout": [0, 1, 2, 3]}, "holdout"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_settings(kw, match):
    ims, ps, labs = dataset(4)
    with pytest.raises(ValueError, match=match):
        densecrf.fit(ims, ps, labs, **kw)


def test_params_file_accepted_everywhere(tmp_path):
    ims, ps, labs = dataset(4)
    out = densecrf.fit(ims, ps, labs, search="grid", grid=[CRFParams(bilateral_sxy=30.0, bilateral_compat=4.0)])
    path = tmp_path / "crf.json"
    out.save(path)
    assert json.loads(path.read_text())["info"]["method"] == "densecrf.fit"
    q = densecrf.refine(ims[0], ps[0], params=str(path))
    crf = densecrf.DenseCRF2D(36, 32, K)
    crf.set_unary(densecrf.unary_from_softmax(ps[0]))
    crf.add_params(str(path), ims[0])
    # 1e-6: the same native inference on the same unary; only the order of float32 operations may differ.
    np.testing.assert_allclose(crf.inference(out.n_iter).reshape(q.shape), q, atol=1e-6)
    if CRFasRNN is not None:  # the layer reads the same file
        assert CRFasRNN.from_params(str(path), K).n_iter == out.n_iter


# --------------------------------------------------------------------------
# densecrf fit
# --------------------------------------------------------------------------
def _folders(tmp_path, n=4):
    from PIL import Image

    ims, ps, labs = dataset(n)
    dirs = [tmp_path / d for d in ("img", "prob", "lab")]
    for d in dirs:
        d.mkdir()
    for i in range(n):
        Image.fromarray(ims[i]).save(dirs[0] / f"f{i}.png")
        np.save(dirs[1] / f"f{i}.npy", ps[i])
        Image.fromarray(labs[i].astype(np.uint8)).save(dirs[2] / f"f{i}.png")
    return [str(d) for d in dirs]


def test_cli_fit_happy_path(tmp_path, capsys):
    dirs = _folders(tmp_path)
    out = tmp_path / "p.json"
    rc = cli.main(["fit", *dirs, "-o", str(out), "--search", "grid", "--holdout", "0.5", "-q"])
    assert rc == 0
    params = CRFParams.load(out)
    assert len(params.info["heldout_names"]) == 2 and params.info["heldout_names"][0].startswith("f")
    text = capsys.readouterr().out
    assert "network alone" in text and "wrote" in text


def _one_line_error(capsys, argv):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("densecrf fit: error:"), err
    return err[0]


def test_cli_fit_hostile(tmp_path, capsys):
    img, prob, lab = _folders(tmp_path)
    out = str(tmp_path / "p.json")
    assert "does not exist" in _one_line_error(capsys, ["fit", img, prob, str(tmp_path / "nope"), "-o", out])
    os.rename(os.path.join(prob, "f1.npy"), os.path.join(prob, "g1.npy"))
    assert "'f1'" in _one_line_error(capsys, ["fit", img, prob, lab, "-o", out])
    os.rename(os.path.join(prob, "g1.npy"), os.path.join(prob, "f1.npy"))
    np.save(os.path.join(prob, "f2.npy"), np.ones((5, 5, K), np.float32) / K)
    assert "f2.npy has shape (5, 5, 3)" in _one_line_error(capsys, ["fit", img, prob, lab, "-o", out])
    with open(os.path.join(prob, "f2.npy"), "wb") as fh:
        fh.write(b"not a numpy file")
    msg = _one_line_error(capsys, ["fit", img, prob, lab, "-o", out])
    assert "could not read probabilities of 'f2'" in msg and "f2.npy (expected a .npy or .npz array)" in msg
    assert not os.path.exists(out)


def test_load_folders_reads_palette_labels_as_indices(tmp_path):
    # Label PNGs are often palette images: their pixels are class indices, not the palette's colours.
    from PIL import Image

    from densecrf.fit import load_folders

    img, prob, lab = _folders(tmp_path, n=2)
    truth = np.asarray(Image.open(os.path.join(lab, "f0.png")), dtype=np.int64)
    pal = Image.fromarray(truth.astype(np.uint8), mode="L").convert("P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (3 * 253))
    pal.save(os.path.join(lab, "f0.png"))
    assert Image.open(os.path.join(lab, "f0.png")).mode == "P"
    names, _, _, labels = load_folders(img, prob, lab)
    assert names == ["f0", "f1"]
    np.testing.assert_array_equal(labels[0], truth)


# --------------------------------------------------------------------------
# Cross-validation over groups (groups=, cv=), the no-CRF rule, shrinkage and bounds
# --------------------------------------------------------------------------
PLANTED = CRFParams(gaussian_compat=None, bilateral_sxy=30.0, bilateral_srgb=4.0, bilateral_compat=5.0)


def fold_table(out):
    return [(f["name"], f["indices"]) for f in out.info["cv"]["folds"]]


def test_cv_folds_groups_and_contiguous_blocks():
    ims, ps, labs = dataset(6)
    kw = {"search": "grid", "grid": [PLANTED]}
    # leave-one-group-out: one fold per group, in order of first appearance; images need not be adjacent
    out = densecrf.fit(ims, ps, labs, groups=["b", "a", "b", "c", "a", "c"], **kw)
    assert fold_table(out) == [("b", [0, 2]), ("a", [1, 4]), ("c", [3, 5])]
    # more groups than cv: neighbouring groups merged into cv folds
    out = densecrf.fit(ims, ps, labs, groups=[1, 1, 2, 3, 4, 4], cv=2, **kw)
    assert fold_table(out) == [("1+2", [0, 1, 2]), ("3+4", [3, 4, 5])]
    # no groups: cv contiguous blocks in the given order, never shuffled (whatever the seed)
    for seed in (0, 7):
        out = densecrf.fit(ims, ps, labs, cv=3, seed=seed, **kw)
        assert fold_table(out) == [("images 0-1", [0, 1]), ("images 2-3", [2, 3]), ("images 4-5", [4, 5])]
    out = densecrf.fit(ims, ps, labs, cv=4, **kw)
    assert [idx for _, idx in fold_table(out)] == [[0, 1], [2, 3], [4], [5]]
    assert out.info["selection"] == "cv" and "heldout_miou" not in out.info


def test_cv_info_is_consistent_and_scores_are_true():
    ims, ps, labs = dataset(6)
    groups = ["x", "x", "y", "y", "z", "z"]
    useless = CRFParams(gaussian_compat=0.01, bilateral_sxy=30.0, bilateral_srgb=4.0, bilateral_compat=0.01)
    out = densecrf.fit(ims, ps, labs, groups=groups, search="grid", grid=[useless, PLANTED])
    cv = out.info["cv"]
    assert cv["verdict"] == "crf" and out.info["selected"] == "grid[1]" == cv["candidate"]
    assert out.bilateral_compat == 5.0 and out.gaussian_compat is None
    for j, fold in enumerate(cv["folds"]):
        # the per-fold figures are what densecrf.refine gives on the fold's images (info rounds to 6 digits: 5e-7)
        net = miou(None, ims, ps, labs, fold["indices"])
        assert cv["network_miou"][j] == pytest.approx(net, abs=5e-7)
        for key, params in (("defaults", CRFParams()), ("selected", out)):
            gain = miou(params, ims, ps, labs, fold["indices"]) - net
            # 1e-6: two numbers each rounded to 6 digits in info, subtracted here
            assert cv["gains"][key][j] == pytest.approx(gain, abs=1e-6), (key, j)
    for key, gains in cv["gains"].items():
        # 2e-6: the mean of numbers rounded to 6 digits against the rounded mean of the unrounded ones
        assert cv["mean_gains"][key] == pytest.approx(np.mean(gains), abs=2e-6), key
    g = np.asarray(cv["gains"]["selected"])
    assert cv["mean_gain"] == pytest.approx(g.mean(), abs=2e-6)  # 2e-6: as above
    # 2e-6: as above; the standard error is std(ddof=1) / sqrt(folds)
    assert cv["se_gain"] == pytest.approx(g.std(ddof=1) / np.sqrt(len(g)), abs=2e-6)
    assert cv["n_positive"] == int((g > 0).sum()) == 3
    assert cv["gains"]["network"] == [0.0, 0.0, 0.0]
    assert cv["reference_names"]["grid_best"] == "grid[1]"
    from densecrf.fit import format_table

    text = format_table(out.info)
    assert "expected gain: " in text and "verdict: CRF" in text and "x, y, z" in text


def test_cv_rejects_a_candidate_that_helps_one_group_and_hurts_the_others():
    """Group 'a': the planted scenes (the CRF cleans them). Groups 'b' and 'c': the same kind of scene with
    the image shifted 4 pixels from its labels (colour edges in the wrong place), where the CRF moves labels
    to the wrong edges. Its mean gain is positive (one large gain, two small losses), yet the rule says no
    CRF; a single split that holds out group 'a' would have picked the CRF."""
    ims, ps, labs = dataset(2)
    for s in range(4):
        img, p, t = scene(10 + s, noise=1.2)
        ims.append(np.roll(img, 4, axis=1))
        ps.append(p)
        labs.append(t)
    groups = ["a", "a", "b", "b", "c", "c"]
    with pytest.warns(UserWarning, match="cross-validation says no CRF"):
        out = densecrf.fit(ims, ps, labs, groups=groups, search="grid", grid=[PLANTED])
    cv = out.info["cv"]
    gains = cv["gains"]["selected"]
    assert cv["candidate"] == "grid[0]" and cv["mean_gain"] > 0  # selected by its mean gain...
    assert gains[0] > 0.2 and gains[1] < 0 and gains[2] < 0  # ...made of one gain and two losses
    assert cv["verdict"] == "no CRF" and out.info["no_crf"] and out.info["selected"] == "network"
    assert out.gaussian_compat is None and out.bilateral_compat is None
    single = densecrf.fit(ims, ps, labs, holdout=[0, 1], search="grid", grid=[PLANTED])
    assert single.info["selected"] == "grid[0]"


@pytest.mark.parametrize(
    "gains,verdict,why",
    [
        ([0.02, 0.03, 0.025], "crf", "above 0 and it gains on 3 of 3"),
        # mean +0.07, standard error 0.115: one fold's large gain hides two losses
        ([0.30, -0.05, -0.04], "no CRF", "is not above 0"),
        # mean +0.079, standard error 0.049 (mean - se > 0), but it gains on 2 of 5 folds
        ([0.2, 0.2, -0.001, -0.001, -0.001], "no CRF", "gains on 2 of 5 folds only"),
        # exactly half the folds positive is enough
        ([0.10, 0.11, -0.001, -0.001], "crf", "gains on 2 of 4"),
        ([0.0, 0.0], "no CRF", "is not above 0"),
    ],
)
def test_cv_rule_needs_a_clearly_positive_gain(gains, verdict, why):
    from densecrf.fit import _verdict

    got, reason = _verdict("grid[0]", gains)
    assert got == verdict and why in reason, reason
    assert _verdict("network", [0.0, 0.0])[0] == "no CRF"


def test_cv_no_crf_when_nothing_helps():
    rng = np.random.default_rng(1)
    ims, ps, labs = [], [], []
    for _ in range(4):
        lab = rng.integers(0, K, (20, 24))
        logits = 0.6 * np.eye(K)[lab]
        ims.append(np.full((20, 24, 3), 128, np.uint8))
        ps.append((np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32))
        labs.append(lab)
    with pytest.warns(UserWarning, match="no CRF candidate gained"):
        out = densecrf.fit(ims, ps, labs, cv=2, search="grid")
    cv = out.info["cv"]
    assert cv["verdict"] == "no CRF" and cv["candidate"] == "network" and out.info["no_crf"]
    assert cv["mean_gains"]["defaults"] < 0  # the CRF did hurt: the test can tell
    assert out.gaussian_compat is None and out.bilateral_compat is None
    from densecrf.fit import format_table

    assert "verdict: no CRF" in format_table(out.info)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"groups": ["a"] * 5}, "groups has 5 entries for 6 images"),
        ({"groups": ["a"] * 6}, r"single group \('a'\).*at least 2 groups"),
        ({"groups": [[1]] * 3 + [[2]] * 3}, r"groups\[0\] = \[1\] is not hashable"),
        ({"groups": "aabbcc"}, "sequence of one group per image"),
        ({"cv": 1}, "cv must be an integer >= 2"),
        ({"cv": 7}, "cv=7 folds of 6 images"),
        ({"groups": [1, 1, 2, 2, 3, 3], "cv": 4}, "cv=4 folds of 3 groups"),
        ({"cv": 2, "holdout": 0.3}, "exclude each other"),
        ({"cv": 2, "shrink": -1.0}, "shrink must be a finite number >= 0"),
        ({"cv": 2, "bounds": {"srgb": (1, 2)}}, "unknown bandwidth 'srgb'"),
        ({"cv": 2, "bounds": {"bilateral_srgb": (5, 1)}}, r"0 < lo <= hi"),
        ({"cv": 2, "grid": [CRFParams(bilateral_srgb=1.0)]}, r"grid\[0\] has bilateral_srgb 1 outside the bounds"),
    ],
)
def test_cv_bad_settings(kw, match):
    ims, ps, labs = dataset(6)
    with pytest.raises(ValueError, match=match):
        densecrf.fit(ims, ps, labs, search="grid", **kw)


def test_default_grid_and_random_points_inside_the_bounds():
    from densecrf.fit import BANDWIDTH_BOUNDS, _random_points, default_grid

    pts = default_grid() + _random_points(200, np.random.default_rng(0))
    for key, (lo, hi) in BANDWIDTH_BOUNDS.items():
        vals = [getattr(p, key) for p in pts]
        assert lo <= min(vals) and max(vals) <= hi, key


@needs_torch
def test_cv_gradient_respects_bounds_and_reports_folds():
    ims, ps, labs = dataset(4)
    # Narrow bounds that the start (the planted point: bilateral sxy 30, srgb 4) lies outside of, and a
    # learning rate large enough that descent would leave them: every bandwidth it reports must lie inside.
    bounds = {"gaussian_sxy": (2.0, 2.5), "bilateral_sxy": (40.0, 45.0), "bilateral_srgb": (6.0, 6.5)}
    out = densecrf.fit(
        ims,
        ps,
        labs,
        groups=["a", "a", "b", "b"],
        search="gradient",
        grid=[CRFParams(gaussian_compat=1.0, gaussian_sxy=2.2, bilateral_sxy=42.0, bilateral_srgb=6.2)],
        bounds=bounds,
        crop=24,
        steps=4,
        batch=1,
        eval_every=2,
        lr=0.5,
    )
    cv = out.info["cv"]
    assert "gradient" in cv["gains"] and len(cv["gradient"]["best_steps"]) == 2
    assert cv["gradient"]["final_steps"] == int(np.ceil(np.median(cv["gradient"]["best_steps"])))
    assert out.info["settings"]["bounds"]["bilateral_srgb"] == [6.0, 6.5]
    # descent is selected here (measured: mean gain 0.5924 against the grid point's 0.5911), so the returned
    # bandwidths are the final run's; they lie inside the bounds, and the run pressed against them (measured:
    # all three ended on their lower bound), so the clamp was doing something
    assert cv["candidate"].startswith("gradient") and cv["verdict"] == "crf"
    for key, (lo, hi) in bounds.items():
        assert lo <= getattr(out, key) <= hi, key
    assert any(getattr(out, key) in (lo, hi) for key, (lo, hi) in bounds.items())


@needs_torch
def test_gradient_bounds_clamp_every_step():
    """_gradient itself: with bounds, every evaluated parameter set has its bandwidths inside them
    (exactly: the log-bounds are rounded inward so that exp stays inside); without, descent leaves them."""
    from densecrf.fit import _gradient, _Scorer

    ims, ps, labs = dataset(3)
    score = _Scorer(ims, ps, labs, [2], K, None, None)
    bounds = {"gaussian_sxy": (2.9, 3.1), "bilateral_sxy": (79.0, 81.0), "bilateral_srgb": (12.5, 13.5)}
    kw = {
        "k": K,
        "ignore_index": None,
        "compat": "potts",
        "loss": "ce",
        "balanced": True,
        "crop": 24,
        "steps": 6,
        "batch": 1,
    }
    kw.update(lr=0.3, eval_every=1, patience=10, threads=None, log=lambda *a: None)
    runs = {}
    for b in (None, bounds):
        hist, _ = _gradient(CRFParams(), ims, ps, labs, [0, 1], score, rng=np.random.default_rng(0), bounds=b, **kw)
        runs[b is None] = [p for _, p, _ in hist]
    for p in runs[False]:
        for key, (lo, hi) in bounds.items():
            assert lo <= getattr(p, key) <= hi, (key, getattr(p, key))
    # the bounds did something: without them, lr 0.3 on log-bandwidths moves at least one out of a +-4 % band
    assert any(not lo <= getattr(p, key) <= hi for p in runs[True] for key, (lo, hi) in bounds.items())


@needs_torch
@pytest.mark.parametrize("compat", ["matrix", "diagonal"])
def test_shrink_pulls_toward_potts(compat):
    from densecrf.fit import _gradient, _Scorer

    def potts_distance(p):
        d = 0.0
        for c in (p.gaussian_compat, p.bilateral_compat):
            m = np.diag(c) if np.ndim(c) == 1 else np.asarray(c, dtype=np.float64)
            if np.ndim(m) == 2:
                d += float(((m - np.mean(np.diag(m)) * np.eye(K)) ** 2).sum())
        return d

    ims, ps, labs = dataset(3)
    score = _Scorer(ims, ps, labs, [2], K, None, None)
    kw = {
        "k": K,
        "ignore_index": None,
        "compat": compat,
        "loss": "ce",
        "balanced": True,
        "crop": 20,
        "steps": 6,
        "batch": 1,
    }
    kw.update(lr=0.1, eval_every=6, patience=1, threads=None, log=lambda *a: None)
    dist = {}
    for shrink in (0.0, 1.0):
        hist, _ = _gradient(PLANTED, ims, ps, labs, [0, 1], score, rng=np.random.default_rng(0), shrink=shrink, **kw)
        dist[shrink] = potts_distance(hist[-1][1])
    # descent left Potts, so there is something to pull back (squared distance measured 0.16 diagonal, 33 matrix)
    assert dist[0.0] > 0.05
    # at least 3x closer: shrink 1 outweighs the data term's pull on these 3 tiny images (measured 60x and 100x
    # closer); 3x leaves room for other float rounding of the same 6 steps, and no pull at all would give 1x
    assert dist[1.0] < dist[0.0] / 3, dist


@needs_torch
def test_holdout_path_ignores_shrink_and_bounds_by_default():
    """Without groups and cv, shrink and bounds default off: the same parameters as with them off explicitly."""
    ims, ps, labs = dataset(4)
    kw = {"search": "gradient", "compat": "matrix", "crop": 24, "steps": 4, "batch": 1, "eval_every": 2, "holdout": 0.5}
    a = densecrf.fit(ims, ps, labs, **kw)
    b = densecrf.fit(ims, ps, labs, shrink=0.0, bounds=False, **kw)
    assert _without_times(a) == _without_times(b)
    assert a.info["settings"]["shrink"] == 0.0 and a.info["settings"]["bounds"] is None
    # and shrink= given on the holdout path does reach descent: its held-out score changes
    # (measured 1.0 without, 0.9973 with shrink 1: the pull toward Potts costs this planted matrix a little)
    c = densecrf.fit(ims, ps, labs, shrink=1.0, **kw)
    assert c.info["settings"]["shrink"] == 1.0
    assert c.info["heldout_miou"]["gradient"] != a.info["heldout_miou"]["gradient"]


def test_default_grid_is_clipped_into_narrower_bounds():
    ims, ps, labs = dataset(4)
    out = densecrf.fit(ims, ps, labs, cv=2, search="grid", bounds={"bilateral_srgb": (6.0, 8.0)})
    assert 6.0 <= out.info["grid_best_params"]["bilateral"]["srgb"] <= 8.0
    assert out.info["settings"]["bounds"]["bilateral_sxy"] == [10.0, 200.0]  # the others from BANDWIDTH_BOUNDS


def test_cli_fit_cv_flags(tmp_path, capsys):
    from PIL import Image

    ims, ps, labs = dataset(6)
    dirs = [tmp_path / d for d in ("img", "prob", "lab")]
    for d in dirs:
        d.mkdir()
    stems = [f"{drive}_f{i:05d}" for drive, i in zip("AABBCC", range(6), strict=True)]
    for s, im, p, lab in zip(stems, ims, ps, labs, strict=True):
        Image.fromarray(im).save(dirs[0] / f"{s}.png")
        np.save(dirs[1] / f"{s}.npy", p)
        Image.fromarray(lab.astype(np.uint8)).save(dirs[2] / f"{s}.png")
    dirs = [str(d) for d in dirs]
    out = tmp_path / "p.json"
    rc = cli.main(["fit", *dirs, "-o", str(out), "--search", "grid", "--groups-by-prefix", "_", "-q"])
    assert rc == 0
    info = CRFParams.load(out).info
    assert [f["name"] for f in info["cv"]["folds"]] == ["A", "B", "C"]
    assert info["cv"]["folds"][1]["names"] == stems[2:4]
    text = capsys.readouterr().out
    assert "cross-validated gain" in text and "verdict:" in text and "wrote" in text
    # --groups FILE with --cv merging the groups; --shrink reaches the settings
    gfile = tmp_path / "groups.json"
    gfile.write_text(json.dumps({s: f"drive{i // 2}" for i, s in enumerate(stems)}))
    argv = ["fit", *dirs, "-o", str(out), "--search", "grid", "--groups", str(gfile), "--cv", "2", "--shrink", "0.5"]
    assert cli.main([*argv, "-q"]) == 0
    info = CRFParams.load(out).info
    assert [f["name"] for f in info["cv"]["folds"]] == ["drive0+drive1", "drive2"]
    assert info["settings"]["shrink"] == 0.5
    # --cv alone: contiguous blocks of the file names in sorted order
    assert cli.main(["fit", *dirs, "-o", str(out), "--search", "grid", "--cv", "3", "-q"]) == 0
    assert CRFParams.load(out).info["cv"]["folds"][0]["names"] == stems[:2]
    capsys.readouterr()
    # errors name the flag and the value
    base = ["fit", *dirs, "-o", str(out)]
    assert "--cv must be at least 2 (folds), got 1" in _one_line_error(capsys, [*base, "--cv", "1"])
    assert "--groups-by-prefix '-'" in _one_line_error(capsys, [*base, "--groups-by-prefix", "-"])
    assert "--holdout 0.3 and --cv" in _one_line_error(capsys, [*base, "--cv", "2", "--holdout", "0.3"])
    assert "--shrink must be a number >= 0" in _one_line_error(capsys, [*base, "--cv", "2", "--shrink", "-1"])
    gfile.write_text(json.dumps({stems[0]: "a"}))
    msg = _one_line_error(capsys, [*base, "--groups", str(gfile)])
    assert f"--groups {gfile}: no group for the image {stems[1]!r}" in msg
    gfile.write_text("[1, 2]")
    assert "expected a JSON object" in _one_line_error(capsys, [*base, "--groups", str(gfile)])
    gfile.write_text(json.dumps(dict.fromkeys(stems, "one")))
    assert "single group ('one')" in _one_line_error(capsys, [*base, "--groups", str(gfile), "--search", "grid"])
