"""Whole-dataset refinement (densecrf.dataset and ``densecrf refine`` on folders).

What starts here: a Dask ``LocalCluster`` of 2 worker processes, its
scheduler and HTTP server on 127.0.0.1 (fixture ``dask_client``, module scope,
closed at the end), one more ``LocalCluster`` of 1 worker started and closed
by ``refine_dataset`` itself, one local Ray instance with 2 CPUs and no
dashboard (fixture ``ray_instance``, module scope, shut down at the end),
local process pools (forked workers), and ``densecrf refine`` subprocesses.
"""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import densecrf
from conftest import PACKAGE_PARENT
from densecrf import io
from densecrf.dataset import MANIFEST_NAME, iter_refine, refine_dataset
from reference import label_probs, smooth_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMVID_VAL = os.path.join(ROOT, "..", "..", "shared", "data", "camvid", "val")
if not os.path.isdir(CAMVID_VAL):
    CAMVID_VAL = "/work/shared/data/camvid/val"

Image = pytest.importorskip("PIL.Image")


# -- helpers -------------------------------------------------------------------------
def _cams(h, w, k, seed):
    """psa-style scores: class activation maps in [0, 1] under a background score (1 - max)^alpha.

    They do not sum to one, as psa's maps do not."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cams = np.zeros((k - 1, h, w))
    for c in range(k - 1):
        cy, cx = r.uniform(0, h), r.uniform(0, w)
        cams[c] = np.exp(-(((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.3 * w)) ** 2))
    cams = np.clip(cams + r.normal(0, 0.05, cams.shape), 0, 1)
    bg = np.power(1 - cams.max(0, keepdims=True), 16)  # psa's alpha = 16 ("la" CRF)
    return np.concatenate([bg, cams]).astype(np.float32)  # [K, H, W]


def make_folder(root, n=6, sizes=((40, 56), (48, 40)), k=4, dtype=np.float32, fmt="npy"):
    """n images and maps (varying sizes) in root/images and root/maps; returns the two folders."""
    img_dir, map_dir = os.path.join(root, "images"), os.path.join(root, "maps")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(map_dir, exist_ok=True)
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        Image.fromarray(smooth_image(h, w, seed=i)).save(os.path.join(img_dir, f"im{i:02d}.png"))
        p = label_probs(h, w, k, seed=100 + i).astype(dtype)
        if fmt == "npz":
            np.savez_compressed(os.path.join(map_dir, f"im{i:02d}.npz"), prob=p)
        else:
            np.save(os.path.join(map_dir, f"im{i:02d}.npy"), p)
    return img_dir, map_dir


def outputs(folder):
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def same_bytes(a, b):
    names = outputs(a)
    assert names == outputs(b)
    return all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)


def read_png(path):
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im)


# -- presets against the original pydensecrf calls -----------------------------------------
dcrf = pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed")
putils = pytest.importorskip("pydensecrf.utils")


def psa_original(img, probs_khw, t=10, scale_factor=1, labels=21):
    """jiwoon-ahn/psa tool/imutils.py crf_inference, call for call: [K, H, W] scores in, [K, H, W] Q out."""
    height, width = img.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(putils.unary_from_softmax(probs_khw)))
    crf.addPairwiseGaussian(sxy=3 / scale_factor, compat=3)
    crf.addPairwiseBilateral(sxy=80 / scale_factor, srgb=13, rgbim=np.copy(img), compat=10)
    return np.array(crf.inference(t)).reshape((labels, height, width))


def irn_original(img, labels, t=10, n_labels=21, gt_prob=0.7):
    """jiwoon-ahn/irn misc/imutils.py crf_inference_label, call for call: [H, W] labels out."""
    height, width = img.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(putils.unary_from_labels(labels, n_labels, gt_prob=gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    q = crf.inference(t)
    return np.argmax(np.array(q).reshape((n_labels, height, width)), axis=0)


def deeplab_original(img, probs_khw):
    """DeepLab v2 on VOC as kazuto1011/deeplab-pytorch libs/utils/crf.py runs it (configs/voc12.yaml)."""
    k, height, width = probs_khw.shape
    crf = dcrf.DenseCRF2D(width, height, k)
    crf.setUnaryEnergy(np.ascontiguousarray(putils.unary_from_softmax(probs_khw)))
    crf.addPairwiseGaussian(sxy=1, compat=3)
    crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(img), compat=4)
    return np.array(crf.inference(10)).reshape((k, height, width))


def _ours(img, maps, **kw):
    (res,) = list(iter_refine([(img, maps)], return_probs=True, workers=1, **kw))
    assert res.status == "done", res.reason
    return res


# Same float32 lattice on both sides (tests/test_pydensecrf.py): labels agree
# on >= 99.9 % of pixels and probabilities within 1e-3 (observed ~1e-6).
@pytest.mark.parametrize("scale_factor", [1, 2])
def test_psa_preset_matches_crf_inference_on_scores(scale_factor):
    h, w, k = 60, 80, 5
    img = smooth_image(h, w, seed=3)
    cams = _cams(h, w, k, seed=4)
    assert np.abs(cams.sum(0) - 1).max() > 0.1  # really not probabilities: the scores path runs
    ref = psa_original(img, cams, scale_factor=scale_factor, labels=k)
    res = _ours(img, np.moveaxis(cams, 0, -1), preset="psa", scale_factor=scale_factor)
    ours = np.moveaxis(res.probs, -1, 0)
    assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.999
    assert np.abs(ours - ref).max() < 1e-3
    assert np.array_equal(res.labels, ours.argmax(0))


def test_psa_preset_matches_crf_inference_on_softmax():
    h, w, k = 50, 70, 6
    img = smooth_image(h, w, seed=5)
    p = label_probs(h, w, k, seed=6)
    ref = psa_original(img, np.moveaxis(p, -1, 0), labels=k)
    ours = np.moveaxis(_ours(img, p, preset="psa").probs, -1, 0)
    assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.999
    assert np.abs(ours - ref).max() < 1e-3


def test_irn_preset_matches_crf_inference_label(tmp_path):
    # Label PNGs from files, as IRN's pipeline stores them; label 0 is a class (zero_unsure=False).
    h, w, k = 56, 72, 4
    img = smooth_image(h, w, seed=7)
    labels = label_probs(h, w, k, seed=8, sharpness=1.0).argmax(-1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(labels).save(tmp_path / "a_labels.png")
    ref = irn_original(img, labels, n_labels=k)
    (res,) = list(
        iter_refine([(str(tmp_path / "a.png"), str(tmp_path / "a_labels.png"))], preset="irn", n_labels=k, workers=1)
    )
    assert res.status == "done", res.reason
    assert (res.labels == ref).mean() >= 0.999


def test_deeplab_preset_matches_deeplab_crf():
    h, w, k = 64, 48, 5
    img = smooth_image(h, w, seed=9)
    p = label_probs(h, w, k, seed=10)
    ref = deeplab_original(img, np.moveaxis(p, -1, 0))
    ours = np.moveaxis(_ours(img, p, preset="deeplabv2-voc").probs, -1, 0)
    assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.999
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.skipif(not os.path.isdir(CAMVID_VAL), reason="CamVid not found")
def test_psa_preset_on_a_camvid_frame(tmp_path):
    # A real photograph through the whole file pipeline (PNG + float16 .npy in, PNG out).
    name = min(os.listdir(CAMVID_VAL))
    img = io.read_image(os.path.join(CAMVID_VAL, name))
    h, w = img.shape[:2]
    p = label_probs(h, w, 11, seed=11, sharpness=1.0).astype(np.float16)
    os.makedirs(tmp_path / "maps")
    np.save(tmp_path / "maps" / (name[:-4] + ".npy"), p)
    s = refine_dataset(
        os.path.join(CAMVID_VAL, name),
        str(tmp_path / "maps" / (name[:-4] + ".npy")),
        str(tmp_path / "out"),
        preset="psa",
        workers=1,
    )
    assert s.ok and s.done == [name[:-4]]
    ref = psa_original(img, np.moveaxis(p.astype(np.float32), -1, 0), labels=11).argmax(0)
    assert (read_png(tmp_path / "out" / name) == ref).mean() >= 0.999


# -- executors: same bytes at any worker count --------------------------------------------------
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    return make_folder(str(root), n=6)


@pytest.fixture(scope="module")
def reference_out(dataset_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "out")
    s = refine_dataset(*dataset_dir, out, workers=1, n_iter=10, save_probs="float16")
    assert s.ok and len(s.done) == 6
    return out


@pytest.fixture(scope="module")
def dask_client():
    """A LocalCluster of 2 worker processes, 1 thread each, all on 127.0.0.1 (any free port); closed at the end."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance (2 CPUs, no dashboard) for the module; shut down at the end."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    from densecrf.dataset.executors import ray_init

    ray_init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_bytes_identical(dataset_dir, reference_out, tmp_path, workers):
    out = str(tmp_path / "out")
    s = refine_dataset(*dataset_dir, out, executor="local", workers=workers, n_iter=10, save_probs="float16")
    assert s.ok and len(s.done) == 6
    assert outputs(out) == sorted([f"im{i:02d}.png" for i in range(6)] + [f"im{i:02d}.npy" for i in range(6)])
    assert same_bytes(out, reference_out)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_dask_executor_bytes_identical(dataset_dir, reference_out, tmp_path, dask_client, in_flight):
    out = str(tmp_path / "out")
    s = refine_dataset(
        *dataset_dir, out, executor="dask", scheduler=dask_client, workers=in_flight, n_iter=10, save_probs="float16"
    )
    assert s.ok and len(s.done) == 6, s.failed
    assert same_bytes(out, reference_out)
    # Both workers took part when two tasks were in flight (the cluster really ran it).
    assert len(dask_client.nthreads()) == 2


def test_dask_executor_own_local_cluster(dataset_dir, reference_out, tmp_path):
    pytest.importorskip("distributed")
    out = str(tmp_path / "out")
    s = refine_dataset(*dataset_dir, out, executor="dask", workers=1, n_iter=10, save_probs="float16")
    assert s.ok and len(s.done) == 6, s.failed
    assert "LocalCluster" in s.executor
    assert same_bytes(out, reference_out)


def test_dask_own_local_cluster_workers_run_without_malloc_trim_threshold(monkeypatch):
    # Dask's default MALLOC_TRIM_THRESHOLD_ makes every large array fresh kernel pages (about 20 %
    # of an item's time here); the executor's own cluster must start its workers without it.
    pytest.importorskip("distributed")
    from densecrf.dataset.executors import DaskExecutor

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with DaskExecutor(workers=1) as ex:
        seen = ex.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        default = ex.client.run(os.environ.get, "OMP_NUM_THREADS")  # Dask's other defaults stay
    assert list(seen.values()) == [None]
    assert list(default.values()) == ["1"]


@pytest.mark.parametrize("in_flight", [1, 2])
def test_ray_executor_bytes_identical(dataset_dir, reference_out, tmp_path, ray_instance, in_flight):
    out = str(tmp_path / "out")
    s = refine_dataset(*dataset_dir, out, executor="ray", workers=in_flight, n_iter=10, save_probs="float16")
    assert s.ok and len(s.done) == 6, s.failed
    assert same_bytes(out, reference_out)
    assert ray_instance.is_initialized()  # the fixture's instance, not shut down by the run


def test_float32_probs_and_npz_maps(tmp_path):
    # .npz maps and float32 outputs: the refined .npy holds what refine returns, bit for bit.
    img_dir, map_dir = make_folder(str(tmp_path), n=2, fmt="npz")
    out = str(tmp_path / "out")
    s = refine_dataset(img_dir, map_dir, out, workers=1, save_probs="float32")
    assert s.ok
    img = io.read_image(os.path.join(img_dir, "im01.png"))
    q = densecrf.refine(img, io.read_probs(os.path.join(map_dir, "im01.npz")))
    saved = np.load(os.path.join(out, "im01.npy"))
    assert saved.dtype == np.float32 and np.array_equal(saved, q)
    assert np.array_equal(read_png(os.path.join(out, "im01.png")), q.argmax(-1))


# -- resume ------------------------------------------------------------------------------------
def test_resume_skips_done_and_redoes_changed(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=5)
    out = str(tmp_path / "out")
    first = refine_dataset(img_dir, map_dir, out, workers=1)
    assert len(first.done) == 5
    again = refine_dataset(img_dir, map_dir, out, workers=2)  # another worker count: same job
    assert (len(again.done), len(again.skipped), len(again.failed)) == (0, 5, 0)
    # A touched input is redone, and only it.
    p = os.path.join(map_dir, "im02.npy")
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = refine_dataset(img_dir, map_dir, out, workers=1)
    assert touched.done == ["im02"] and len(touched.skipped) == 4
    # A deleted output is redone.
    os.remove(os.path.join(out, "im04.png"))
    assert refine_dataset(img_dir, map_dir, out, workers=1).done == ["im04"]
    # Changed parameters redo everything; --no-resume too.
    assert len(refine_dataset(img_dir, map_dir, out, workers=1, n_iter=3).done) == 5
    assert len(refine_dataset(img_dir, map_dir, out, workers=1, n_iter=3, resume=False).done) == 5
    assert len(refine_dataset(img_dir, map_dir, out, workers=1, n_iter=3).skipped) == 5


def test_manifest_line_cut_short_is_ignored(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=3)
    out = str(tmp_path / "out")
    refine_dataset(img_dir, map_dir, out, workers=1)
    path = os.path.join(out, MANIFEST_NAME)
    with open(path) as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 4  # the header and one line per item (compacted at the end)
    with open(path, "w") as fh:  # as a kill in the middle of the last line leaves it
        fh.write("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    s = refine_dataset(img_dir, map_dir, out, workers=1)
    assert len(s.done) == 1 and len(s.skipped) == 2


def test_dry_run_writes_nothing(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=3)
    out = str(tmp_path / "out")
    s = refine_dataset(img_dir, map_dir, out, dry_run=True)
    assert [a for _, a, _ in s.planned] == ["refine"] * 3 and not os.path.exists(out)
    refine_dataset(img_dir, map_dir, out, workers=1)
    os.remove(os.path.join(out, "im00.png"))
    s = refine_dataset(img_dir, map_dir, out, dry_run=True)
    assert [a for _, a, _ in s.planned] == ["refine", "skip", "skip"]
    assert outputs(out) == ["im01.png", "im02.png"]
    assert "1 to refine, 2 to skip" in s.line()


# -- bad inputs and protected inputs -----------------------------------------------------------
def make_bad_folder(root):
    """Good items plus a corrupt PNG, a truncated .npy, a map of the wrong size, a NaN map and a missing map."""
    img_dir, map_dir = make_folder(root, n=4, sizes=((40, 56),))
    bad = {}
    with open(os.path.join(img_dir, "corrupt.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    np.save(os.path.join(map_dir, "corrupt.npy"), label_probs(40, 56, 4))
    bad["corrupt"] = os.path.join(img_dir, "corrupt.png")
    for name in ("truncated", "wrongsize", "nan", "nomap"):
        Image.fromarray(smooth_image(40, 56, seed=50)).save(os.path.join(img_dir, f"{name}.png"))
    np.save(os.path.join(map_dir, "truncated.npy"), label_probs(40, 56, 4))
    with open(os.path.join(map_dir, "truncated.npy"), "r+b") as fh:
        fh.truncate(os.path.getsize(os.path.join(map_dir, "truncated.npy")) // 2)
    bad["truncated"] = os.path.join(map_dir, "truncated.npy")
    np.save(os.path.join(map_dir, "wrongsize.npy"), label_probs(40, 50, 4))
    bad["wrongsize"] = os.path.join(map_dir, "wrongsize.npy")
    p = label_probs(40, 56, 4)
    p[7, 9, 2] = np.nan
    np.save(os.path.join(map_dir, "nan.npy"), p)
    bad["nan"] = os.path.join(map_dir, "nan.npy")
    bad["nomap"] = os.path.join(img_dir, "nomap.png")
    return img_dir, map_dir, bad


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_inputs_reported_good_ones_written(tmp_path, workers):
    img_dir, map_dir, bad = make_bad_folder(str(tmp_path))
    out = str(tmp_path / "out")
    s = refine_dataset(img_dir, map_dir, out, workers=workers)
    assert sorted(s.done) == [f"im{i:02d}" for i in range(4)]
    failed = {k: (path, reason) for k, path, reason in s.failed}
    assert set(failed) == set(bad)
    for key, path in bad.items():
        assert failed[key][0] == path
    assert "not a readable image" in failed["corrupt"][1]
    assert "could not read" in failed["truncated"][1]
    assert "(40, 50, 4)" in failed["wrongsize"][1] and "40 x 56" in failed["wrongsize"][1]
    assert "finite" in failed["nan"][1] and "(7, 9, 2)" in failed["nan"][1]
    assert "no probability map" in failed["nomap"][1]
    assert s.total == 9 and not s.ok
    assert outputs(out) == [f"im{i:02d}.png" for i in range(4)]
    # A rerun retries the failed ones only.
    s2 = refine_dataset(img_dir, map_dir, out, workers=workers)
    assert len(s2.skipped) == 4 and len(s2.failed) == 5 and not s2.done


def _contents(folder):
    import pathlib

    return {p.name: p.read_bytes() for p in pathlib.Path(folder).iterdir()}


def test_outputs_never_overwrite_inputs(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=2)
    before = {d: _contents(d) for d in (img_dir, map_dir)}
    for out in (img_dir, map_dir, os.path.join(img_dir, ".")):
        with pytest.raises(io.InputError, match="holds input files"):
            refine_dataset(img_dir, map_dir, out, workers=1)
    # a symbolic link to an input folder is that folder
    os.symlink(map_dir, tmp_path / "link")
    with pytest.raises(io.InputError, match="holds input files"):
        refine_dataset(img_dir, map_dir, str(tmp_path / "link"), workers=1)
    # a folder of links to the inputs is an input folder too
    os.makedirs(tmp_path / "links")
    for n in os.listdir(img_dir):
        os.symlink(os.path.join(img_dir, n), tmp_path / "links" / n)
    with pytest.raises(io.InputError, match="holds input files"):
        refine_dataset(str(tmp_path / "links"), map_dir, str(tmp_path / "links"), workers=1)
    after = {d: _contents(d) for d in (img_dir, map_dir)}
    assert before == after


def test_two_images_with_one_stem_are_refused(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=2)
    Image.fromarray(smooth_image(40, 56)).save(os.path.join(img_dir, "im00.jpg"))
    with pytest.raises(io.InputError, match=r"same output im00\.png"):
        refine_dataset(img_dir, map_dir, str(tmp_path / "out"))


# -- sources and the generator --------------------------------------------------------------------
def test_generator_yields_in_input_order(tmp_path):
    # Sizes vary a lot so that items finish out of order on 2 workers.
    sizes = [(120, 160), (16, 16), (96, 128), (8, 12), (64, 64), (20, 30)]
    items = [(smooth_image(h, w, seed=i), label_probs(h, w, 3, seed=i), f"k{i}") for i, (h, w) in enumerate(sizes)]
    got = list(iter_refine(items, workers=2))
    assert [r.index for r in got] == list(range(len(items)))
    assert [r.key for r in got] == [f"k{i}" for i in range(len(items))]
    for (img, p, _), r in zip(items, got, strict=True):
        assert np.array_equal(r.labels, densecrf.refine(img, p).argmax(-1))


def test_sources_globs_pairs_lists_and_datasets(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=3)
    ref = str(tmp_path / "ref")
    refine_dataset(img_dir, map_dir, ref, workers=1)
    imgs = sorted(os.path.join(img_dir, n) for n in os.listdir(img_dir))
    maps = sorted(os.path.join(map_dir, n) for n in os.listdir(map_dir))
    runs = {
        "glob": (os.path.join(img_dir, "im*.png"), os.path.join(map_dir, "*.npy")),
        "lists": (imgs, maps),
        "pairs": (list(zip(imgs, maps, strict=True)), None),
    }
    for name, (a, b) in runs.items():
        out = str(tmp_path / name)
        assert len(refine_dataset(a, b, out, workers=1).done) == 3
        assert same_bytes(out, ref), name

    class MapStyle:  # a torch.utils.data.Dataset-like object: __len__ and __getitem__
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return io.read_image(imgs[i]), io.read_probs(maps[i]), f"im{i:02d}"

    out = str(tmp_path / "mapstyle")
    assert len(refine_dataset(MapStyle(), None, out, workers=2).done) == 3
    assert all(filecmp.cmp(os.path.join(out, n), os.path.join(ref, n), shallow=False) for n in outputs(ref))
    # arrays are identified by content: a rerun skips them
    assert len(refine_dataset(MapStyle(), None, out, workers=1).skipped) == 3


def test_torch_dataset_source(tmp_path):
    torch = pytest.importorskip("torch")

    class TorchData(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.from_numpy(smooth_image(24, 32, seed=i)), torch.from_numpy(label_probs(24, 32, 3, seed=i))

    got = list(iter_refine(TorchData(), workers=1))
    assert [r.status for r in got] == ["done", "done"]
    assert np.array_equal(
        got[1].labels, densecrf.refine(smooth_image(24, 32, seed=1), label_probs(24, 32, 3, seed=1)).argmax(-1)
    )


def test_importing_the_pipeline_imports_no_engine(tmp_path):
    code = (
        "import sys, densecrf, densecrf.dataset; "
        "print(sorted(m for m in ('torch', 'dask', 'distributed', 'ray', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PACKAGE_PARENT},
    )
    assert out.stdout.strip() == "[]"


# -- the cuda executor: on a GPU, or in the host emulation of tests/cuda_emu --------------------------
@pytest.fixture(params=["gpu", "emu"])
def cuda_backend(request, monkeypatch):
    """'gpu' (a real device; skipped without one) or 'emu' (the CUDA source run on the host, as in test_cuda.py)."""
    import densecrf.backends.cuda as cuda_native  # every CUDA call goes through its _C

    if request.param == "gpu":
        if not densecrf.cuda_available():
            pytest.skip("no CUDA device, or densecrf built without CUDA (densecrf.cuda_available() is False)")
        return "gpu"
    sys.path.insert(0, os.path.join(ROOT, "tests", "cuda_emu"))
    try:
        import emulate
    finally:
        sys.path.pop(0)
    try:
        mod = emulate.build()
    except Exception as exc:
        pytest.skip(f"CUDA host emulation unavailable: {exc}")
    monkeypatch.setattr(cuda_native, "_C", mod)
    monkeypatch.setattr(cuda_native, "_built_with_cuda", lambda: True)
    return "emu"


def test_cuda_executor_agrees_with_local(cuda_backend, dataset_dir, reference_out, tmp_path):
    # Batches of 2 over two image sizes, one reader process. The CUDA tests'
    # criterion against the CPU backend: labels agree on >= 99.9 % of pixels;
    # probabilities within 2e-3 (float16 outputs: half an ulp at 1.0 is 4.9e-4,
    # plus the GPU's exp rounding; observed differences are ~1e-6 before float16).
    out = str(tmp_path / "out")
    s = refine_dataset(*dataset_dir, out, executor="cuda", workers=1, batch_size=2, n_iter=10, save_probs="float16")
    assert s.ok and len(s.done) == 6, s.failed
    for i in range(6):
        a, b = read_png(os.path.join(out, f"im{i:02d}.png")), read_png(os.path.join(reference_out, f"im{i:02d}.png"))
        assert (a == b).mean() >= 0.999
        qa, qb = (np.load(os.path.join(d, f"im{i:02d}.npy")).astype(np.float32) for d in (out, reference_out))
        assert np.abs(qa - qb).max() < 2e-3


def test_cuda_executor_reports_bad_items_one_by_one(cuda_backend, tmp_path):
    img_dir, map_dir, bad = make_bad_folder(str(tmp_path))
    out = str(tmp_path / "out")
    s = refine_dataset(img_dir, map_dir, out, executor="cuda", workers=2, batch_size=4)
    assert sorted(s.done) == [f"im{i:02d}" for i in range(4)]
    assert {k: p for k, p, _ in s.failed} == bad
    assert outputs(out) == [f"im{i:02d}.png" for i in range(4)]


def test_cuda_executor_psa_scores(cuda_backend, tmp_path):
    # Score maps (psa) are renormalised by the readers; a batch mixing them with
    # softmax maps is split by clip. Same criterion as above against the CPU.
    items = []
    for i in range(3):
        img = smooth_image(32, 40, seed=i)
        p = np.moveaxis(_cams(32, 40, 4, seed=i), 0, -1) if i != 1 else label_probs(32, 40, 4, seed=i)
        items.append((img, p, f"k{i}"))
    gpu = list(iter_refine(items, preset="psa", executor="cuda", workers=1, batch_size=3))
    cpu = list(iter_refine(items, preset="psa", workers=1))
    for g, c in zip(gpu, cpu, strict=True):
        assert g.status == c.status == "done"
        assert (g.labels == c.labels).mean() >= 0.999


def test_cuda_executor_without_cuda_says_so(monkeypatch, tmp_path, dataset_dir):
    import densecrf.backends.cuda as cuda_native

    monkeypatch.setattr(cuda_native, "_built_with_cuda", lambda: False)
    with pytest.raises(RuntimeError, match="built without CUDA"):
        refine_dataset(*dataset_dir, str(tmp_path / "out"), executor="cuda")
    assert not os.path.exists(tmp_path / "out")  # nothing made before the error


# -- the command line ------------------------------------------------------------------------------
def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PACKAGE_PARENT, os.environ.get("PYTHONPATH", "")])}
    kw.setdefault("cwd", PACKAGE_PARENT)
    return subprocess.Popen(
        [sys.executable, "-m", "densecrf", "refine", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _records(out):
    path = os.path.join(out, MANIFEST_NAME)
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")[1:]
    return sum(1 for line in lines if line.startswith(b"{") and line.endswith(b"}"))


def test_cli_folders_bad_inputs_exit_non_zero(tmp_path, capsys):
    from densecrf.cli import main

    img_dir, map_dir, bad = make_bad_folder(str(tmp_path))
    code = main(["refine", img_dir, map_dir, "-o", str(tmp_path / "out"), "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "9 inputs: 4 done, 0 skipped, 5 failed" in out
    failures = [line for line in err.splitlines() if line.startswith("densecrf refine: failed: ")]
    assert len(failures) == 5
    for path in bad.values():
        assert any(f"failed: {path}: " in line for line in failures), path
    assert outputs(tmp_path / "out") == [f"im{i:02d}.png" for i in range(4)]


def test_cli_refuses_output_folder_of_inputs(tmp_path, capsys):
    from densecrf.cli import main

    img_dir, map_dir = make_folder(str(tmp_path), n=1)
    assert main(["refine", img_dir, map_dir, "-o", map_dir]) == 2
    assert "holds input files" in capsys.readouterr().err
    assert main(["refine", img_dir, os.path.join(map_dir, "im00.npy"), "-o", str(tmp_path / "o")]) == 2
    assert "IMAGE is a folder (or glob) but PROBS is not" in capsys.readouterr().err


def test_cli_single_file_keeps_its_meaning(tmp_path):
    img_dir, map_dir = make_folder(str(tmp_path), n=1)
    proc = _cli(os.path.join(img_dir, "im00.png"), os.path.join(map_dir, "im00.npy"), "-o", tmp_path / "one")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert os.path.exists(tmp_path / "one.png") and os.path.exists(tmp_path / "one.npy")


def test_cli_sigkill_halfway_then_resume(tmp_path):
    # 20 images on 1 worker, SIGKILL once half are recorded; the rerun must
    # redo exactly the unrecorded ones and end byte-identical to a run that was
    # never interrupted, leaving no partial or temporary file.
    n = 20
    img_dir, map_dir = make_folder(str(tmp_path), n=n, sizes=((150, 200), (160, 180)))
    flags = ["--workers", "1", "--iters", "10", "--save-probs", "float16"]
    full = tmp_path / "full"
    proc = _cli(img_dir, map_dir, "-o", full, *flags)
    assert proc.communicate(timeout=300)[0].startswith(f"{n} inputs: {n} done")
    out = str(tmp_path / "out")
    proc = _cli(img_dir, map_dir, "-o", out, *flags)
    deadline = time.monotonic() + 300
    while _records(out) < n // 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before it could be killed: {proc.communicate()}")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    recorded = _records(out)
    assert n // 2 <= recorded < n
    # No partial output: every visible file decodes whole.
    for name in outputs(out):
        path = os.path.join(out, name)
        if name.endswith(".png"):
            with Image.open(path) as im:
                im.load()
        else:
            assert np.load(path).shape[-1] == 4
    rerun = _cli(img_dir, map_dir, "-o", out, *flags)
    stdout, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert stdout.startswith(f"{n} inputs: {n - recorded} done, {recorded} skipped, 0 failed"), stdout
    assert same_bytes(out, str(full))
    assert not [f for f in os.listdir(out) if f.endswith(".part")]


def test_cuda_executor_many_sizes_never_stalls(cuda_backend):
    # More distinct sizes than the window holds, none filling a batch: the
    # executor must send part-filled batches rather than wait for a full one.
    items = [(smooth_image(8 + i, 9 + i, seed=i), label_probs(8 + i, 9 + i, 3, seed=i)) for i in range(12)]
    got = list(iter_refine(items, executor="cuda", workers=1, batch_size=4))
    assert [r.status for r in got] == ["done"] * 12
    for (img, p), r in zip(items, got, strict=True):
        # the CUDA tests' criterion against the CPU backend
        assert (r.labels == densecrf.refine(img, p).argmax(-1)).mean() >= 0.999
