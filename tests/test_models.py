"""The DeepLab-style network, its CRF head and the CamVid pipeline (issue 5, work in progress)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import camvid_dir  # noqa: E402
from densecrf.models import (  # noqa: E402
    DeepLabCRF,
    DeepLabLite,
    camvid,
)
from reference import confusion_numpy  # noqa: E402


def test_shapes_scales_and_size():
    torch.manual_seed(0)
    net = DeepLabLite(11).eval()
    # "a few million parameters at most"
    assert sum(p.numel() for p in net.parameters()) < 3_000_000
    x = torch.rand(2, 3, 45, 61)  # odd sizes: every stage rounds differently
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 11, 45, 61)
        pyramid = net(x, scales=(0.5, 1.0))
        # the pyramid averages in a half-scale pass: not the plain forward (by far more than allclose's 1e-5)
        assert pyramid.shape == y.shape and not torch.allclose(pyramid, y)
        # a single scale of 1.0 is the plain forward
        assert torch.equal(net(x, scales=(1.0,)), y)
        assert DeepLabLite(11, upsample="learned")(x).shape == y.shape
    with pytest.raises(ValueError, match="upsample"):
        DeepLabLite(11, upsample="nearest")


def test_crf_head_outputs_and_gradients():
    torch.manual_seed(0)
    model = DeepLabCRF(5, width=8, crf_iterations=2, bilateral_sxy=10.0)
    x = torch.rand(1, 3, 24, 32)
    net_logits, crf_logits = model(x, output="both")
    assert net_logits.shape == crf_logits.shape == (1, 5, 24, 32)
    assert torch.equal(model(x, output="network"), net_logits)
    # the CRF changes the logits, and gradients reach the network through it
    assert not torch.allclose(net_logits, crf_logits)
    crf_logits.sum().backward()
    assert model.net.classify.weight.grad is not None and model.net.classify.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="output"):
        model(x, output="labels")


def test_camvid_pipeline_and_a_training_step(tmp_path):
    DATA = camvid_dir()
    pairs = camvid.list_split(DATA, "val")
    assert len(pairs) == 101
    image, labels = camvid.load_pair(*pairs[0])
    assert image.shape == (360, 480, 3) and labels.shape == (360, 480)
    assert labels.max() <= camvid.IGNORE_INDEX
    small = camvid.CamVid(DATA, "val", size=(60, 45))
    x, y = small[0]
    assert x.shape == (3, 45, 60) and y.shape == (45, 60) and 0 <= float(x.min()) and float(x.max()) <= 1
    from densecrf.models import train

    out = tmp_path / "run"
    args = [
        "--data",
        DATA,
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch",
        "2",
        "--max-batches",
        "1",
        "--size",
        "60",
        "45",
        "--width",
        "8",
    ]
    assert train.main(args) == 0
    log = (out / "log.csv").read_text().strip().split(",")
    assert log[0] == "0" and 0 <= float(log[2]) <= 1  # epoch, loss, val mIoU, pixel acc
    assert (out / "last.pt").exists() and (out / "best.pt").exists()
    # a second call with more epochs resumes from last.pt at epoch 1
    assert train.main(args[:4] + ["--epochs", "2"] + args[6:]) == 0
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().split()] == ["0", "1"]


def test_training_validation_scores_like_the_figures_path():
    # The bundled network's figures (61.6 % mean IoU on all of val) are
    # recomputed by tests/test_figures.py, one frame at a time. The training
    # script's validation (train.evaluate: batches of 4 frames, its own
    # resizing) must score the same frames the same: equal confusion
    # matrices on 6 frames (a near-tied pixel may flip when the batch size
    # changes the convolution's algorithm: at most 1e-5 of the pixels;
    # measured: none).
    from densecrf.models import NET_SIZE, pretrained
    from densecrf.models.deeplab import logits_at_size
    from densecrf.models.train import evaluate

    net = pretrained()
    val = camvid.CamVid(camvid_dir(), "val")
    val.pairs = val.pairs[::20]
    m = evaluate(net, val, input_size=NET_SIZE)
    want = np.zeros((11, 11), np.int64)
    with torch.no_grad():
        for image_path, label_path in val.pairs:
            image, labels = camvid.load_pair(image_path, label_path)
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0
            pred = logits_at_size(net, x, NET_SIZE).argmax(1)[0].numpy()
            want += confusion_numpy(pred, labels, 11, camvid.IGNORE_INDEX)
    assert np.abs(m.confusion - want).sum() <= 2 * 1e-5 * want.sum()  # each flip moves two entries
