"""DeepLabCRF at full resolution over a network run at its training size, and the CRF fine-tune."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from densecrf.models import DeepLabCRF, camvid  # noqa: E402


def test_net_size_runs_the_network_small_and_the_crf_at_full_resolution():
    torch.manual_seed(0)
    model = DeepLabCRF(4, width=8, crf_iterations=2, net_size=(16, 12), bilateral_sxy=10.0).eval()
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        net_logits, crf_logits = model(x, output="both")
        # the network's own output at 16x12, bilinearly up-sampled: what net_size promises
        small = F.interpolate(x, size=(12, 16), mode="bilinear", align_corners=False)
        expect = F.interpolate(model.net(small), size=(24, 32), mode="bilinear", align_corners=False)
    assert net_logits.shape == crf_logits.shape == (2, 4, 24, 32)
    assert torch.equal(net_logits, expect)
    # the CRF ran on the full-resolution logits with the full-resolution image
    with torch.no_grad():
        assert torch.equal(model.crf(expect, x * 255.0), crf_logits)  # the same computation: the same bits
    # an image already at net_size goes through the network unresized
    with torch.no_grad():
        assert torch.equal(model(small, output="network"), model.net(small))


def _fake_camvid(root, n=3, w=48, h=32, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / (split + "annot")).mkdir()
        for i in range(n):
            lab = np.zeros((h, w), np.uint8)
            lab[:, w // 2 :] = 3
            lab[: h // 4] = 0
            lab[0, 0] = camvid.IGNORE_INDEX
            img = camvid.PALETTE[lab].astype(np.int16) + rng.integers(-10, 10, (h, w, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / f"f{i}.png")
            Image.fromarray(lab).save(root / (split + "annot") / f"f{i}.png")


def test_random_crops_are_consistent_and_bounded(tmp_path):
    _fake_camvid(tmp_path)
    ds = camvid.CamVid(str(tmp_path), "train", crop=(20, 10), seed=1)
    x, y = ds[0]
    assert x.shape == (3, 10, 20) and y.shape == (10, 20)
    # image and labels cut at the same place: the label colours match the image up to the noise (+-10)
    img = (x.permute(1, 2, 0).numpy() * 255).round()
    lab = y.numpy()
    valid = lab != camvid.IGNORE_INDEX
    assert np.abs(img[valid] - camvid.PALETTE[lab[valid]]).max() <= 10
    with pytest.raises(ValueError, match="larger"):
        camvid.CamVid(str(tmp_path), "train", crop=(100, 10))[0]


def test_crf_fine_tune_smoke_run(tmp_path):
    """--crf from network weights: trains both parts, saves a whole DeepLabCRF, resumes."""
    from densecrf.models import DeepLabLite, train

    _fake_camvid(tmp_path / "data")
    torch.manual_seed(0)
    init = tmp_path / "net.pt"
    torch.save({"model": DeepLabLite(11, 8).state_dict(), "args": {"width": 8}}, init)
    out = tmp_path / "run"
    args = [
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch",
        "2",
        "--width",
        "8",
        "--size",
        "24",
        "16",
        "--crf",
        "--init",
        str(init),
        "--crop",
        "32",
        "24",
        "--crf-iter",
        "2",
        "--crf-bilateral",
        "20",
        "13",
        "3",
    ]
    # two epochs: a one-cycle schedule of one step runs at its minimum rate only
    assert train.main(args) == 0
    best = torch.load(out / "best.pt", map_location="cpu")
    assert best["crf"] is True
    model = DeepLabCRF(11, 8, 2, net_size=(24, 16), bilateral_sxy=20.0, per_class_weights=True)
    model.load_state_dict(best["model"])  # the whole model: network and CRF head
    start = torch.load(init, map_location="cpu")["model"]
    # the network moved from its initial weights, and so did the CRF's parameters
    assert not torch.equal(model.net.classify.weight, start["classify.weight"])
    assert not torch.equal(model.crf.weights["bilateral"], torch.full((11,), 3.0))
    assert train.main(args[:4] + ["--epochs", "3"] + args[6:]) == 0
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().split()] == ["0", "1", "2"]


def test_bundled_crf_as_rnn_validation_scores_like_the_figures_path():
    # The model's figures (64.4 % mean IoU on all of val) are recomputed by
    # tests/test_figures.py frame by frame; the training script's validation
    # (train.evaluate, batches of 4) must score the same frames the same
    # (at most 1e-5 of the pixels may flip with the batch size; measured:
    # none), and the head must change the network's labels.
    from conftest import camvid_dir
    from densecrf.models import pretrained
    from densecrf.models.train import evaluate
    from reference import confusion_numpy

    model = pretrained(crf=True)
    assert model.net_size == (240, 180)
    val = camvid.CamVid(camvid_dir(), "val")
    val.pairs = val.pairs[::25]  # 5 of the 101 validation frames, full resolution
    crf = evaluate(model, val, output="crf")
    net = evaluate(model, val, output="network")
    want = np.zeros((11, 11), np.int64)
    with torch.no_grad():
        for image_path, label_path in val.pairs:
            image, labels = camvid.load_pair(image_path, label_path)
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0
            want += confusion_numpy(model(x, output="crf")[0].argmax(0).numpy(), labels, 11, camvid.IGNORE_INDEX)
    assert np.abs(crf.confusion - want).sum() <= 2 * 1e-5 * want.sum()  # each flip moves two entries
    assert not np.array_equal(crf.confusion, net.confusion)


def test_crf_fine_tune_from_a_parameter_file(tmp_path):
    """--crf-params starts the head from a densecrf.params file; pretrained(path=) rebuilds that structure."""
    from densecrf.models import DeepLabLite, pretrained, train
    from densecrf.params import CRFParams

    _fake_camvid(tmp_path / "data")
    torch.manual_seed(0)
    init = tmp_path / "net.pt"
    torch.save({"model": DeepLabLite(11, 8).state_dict(), "args": {"width": 8}}, init)
    rng = np.random.default_rng(0)
    mu = -np.eye(11) + 0.1 * rng.normal(size=(11, 11))
    w = rng.uniform(0.5, 2.0, 11)
    # a shared matrix with per-class column weights: what densecrf.fit writes and CRFasRNN can hold
    CRFParams(
        gaussian_sxy=2.0,
        gaussian_compat=mu.tolist(),
        bilateral_sxy=15.0,
        bilateral_srgb=4.0,
        bilateral_compat=(mu * w[None, :]).tolist(),
    ).save(tmp_path / "p.json")
    out = tmp_path / "run"
    args = [
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch",
        "2",
        "--width",
        "8",
        "--size",
        "24",
        "16",
        "--crf",
        "--init",
        str(init),
        "--crop",
        "32",
        "24",
        "--crf-iter",
        "2",
        "--crf-params",
        str(tmp_path / "p.json"),
    ]
    assert train.main(args) == 0
    model = pretrained(crf=True, path=str(out / "best.pt"))
    # the bandwidth is held as a float32 parameter: 4.0 comes back to float32 rounding (approx's 1e-6)
    assert model.crf.n_iter == 2 and float(model.crf.bandwidth("bilateral", "srgb")) == pytest.approx(4.0)
    best = torch.load(out / "best.pt", map_location="cpu")["model"]
    assert torch.equal(model.crf.compat, best["crf.compat"])
    # the head started from the file's matrix and moved from it in training
    assert not torch.allclose(model.crf.compat, torch.as_tensor(mu, dtype=torch.float32))
    # Adam moves an entry by about the learning rate per step at most: at most 4 steps (2 epochs of
    # 2 batches) at <= 0.02 before best.pt, so <= 0.08; 0.1 leaves room
    assert torch.allclose(model.crf.compat, torch.as_tensor(mu, dtype=torch.float32), atol=0.1)
