"""densecrf.nn.InstanceCRF: the joint instance CRF of refine_instances as a differentiable layer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import densecrf  # noqa: E402
from densecrf import instances as inst  # noqa: E402
from densecrf.nn import InstanceCRF  # noqa: E402


def _scene(h=40, w=52, seed=0):
    """An image with a bright rectangle and three overlapping soft blobs (one weak) with scores."""
    rng = np.random.default_rng(seed)
    im = (rng.random((h, w, 3)) * 60).astype(np.uint8)
    im[10:30, 15:40] += 150
    yy, xx = np.mgrid[:h, :w]

    def blob(cy, cx, r):
        return np.clip(1.2 - np.hypot(yy - cy, xx - cx) / r, 0, 1) * 0.9 + 0.02

    masks = np.stack([blob(20, 25, 10), blob(22, 33, 8), blob(8, 8, 6)]).astype(np.float32)
    return im, masks, np.array([0.9, 0.7, 0.3])


def _numpy_q(im, masks, scores, prm):
    """What refine_instances' joint mode computes before its arg-max (its own private steps)."""
    p, s, _ = inst._instance_inputs(im, masks, scores, None)
    bg = -prm.power * np.log(np.maximum(1.0 - p.max(axis=0), prm.min_prob))
    unary = np.concatenate([bg[None], inst._instance_energies(p, s, prm)], axis=0)
    return unary, inst._mean_field(im, unary, 1, prm, 1, "cpu")


def _t(im):
    return torch.from_numpy(im).permute(2, 0, 1).float()


def test_defaults_are_instance_params_defaults():
    # The layer's defaults must not drift from refine_instances' (fitted) defaults.
    layer, prm = InstanceCRF(), inst.InstanceParams()
    for f in dataclasses.fields(prm):
        if f.name in ("mode", "crop_margin", "refine", "info", "class_power"):
            continue  # not the joint CRF's numbers (class_power is refine_panoptic's)
        got = getattr(layer, f.name)
        got = float(got.detach()) if isinstance(got, torch.Tensor) else got
        assert got == pytest.approx(getattr(prm, f.name), rel=1e-6), f.name  # float32 storage of the learned ones


@pytest.mark.parametrize("prm", [inst.InstanceParams(), inst.InstanceParams(instance_compat=0.4, confident_bonus=1.5)])
def test_forward_is_refine_instances_joint_crf(prm):
    im, masks, scores = _scene()
    unary, q = _numpy_q(im, masks, scores, prm)
    layer = InstanceCRF.from_params(prm, threads=1)
    with torch.no_grad():
        u = layer.unary(torch.from_numpy(masks), torch.from_numpy(scores).float())
        z = layer(_t(im), torch.from_numpy(masks), torch.from_numpy(scores))
    # float32 energies of the same formula, in a different order of operations: a few ulps of values ~10.
    np.testing.assert_allclose(u.numpy(), unary, atol=2e-5)
    # Five iterations of the same filters (native fused path vs torch's), float32: Q agrees to ~1e-6;
    # 1e-5 leaves room for other SIMD widths.
    np.testing.assert_allclose(torch.softmax(z, 0).numpy(), q, atol=1e-5)
    ids = densecrf.refine_instances(im, masks, scores, params=prm).ids
    assert (z.argmax(0).numpy() == ids).all()  # no instance emptied here, so no rescue: the same labels


def test_gradcheck_float64_masks_scores_and_parameters():
    # float64 masks: the float64 lattice on the CPU; gradcheck's default eps and tolerances.
    rng = np.random.default_rng(1)
    h, w = 5, 6
    im = torch.from_numpy((rng.random((3, h, w)) * 255).astype(np.float64))
    # away from min_prob's clamp and with no ties in the max over instances (both kinks of the unary)
    masks = torch.from_numpy(0.1 + 0.8 * rng.random((2, h, w))).requires_grad_()
    scores = torch.tensor([0.8, 0.55], dtype=torch.float64, requires_grad=True)
    layer = InstanceCRF(n_iter=3, gaussian_sxy=2.0, bilateral_sxy=3.0, bilateral_srgb=40.0).double()
    assert torch.autograd.gradcheck(lambda m, s: layer(im, m, s), (masks, scores))
    names = [n for n, _ in layer.named_parameters()]
    assert len(names) == 6  # power, score_power, fg_bias, instance_compat and both weights

    def of_params(*ps):
        return torch.func.functional_call(
            layer, dict(zip(names, ps, strict=True)), (im, masks.detach(), scores.detach())
        )

    inputs = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    assert torch.autograd.gradcheck(of_params, inputs)


def test_batch_of_lists_with_different_instance_counts():
    im, masks, scores = _scene()
    im2, masks2, scores2 = _scene(seed=3)
    layer = InstanceCRF(threads=1)
    images = torch.stack([_t(im), _t(im2), _t(im)])
    ms = [torch.from_numpy(masks), torch.from_numpy(masks2[:1]), torch.zeros(0, *masks.shape[1:])]
    ss = [torch.from_numpy(scores), torch.from_numpy(scores2[:1]), None]
    with torch.no_grad():
        out = layer(images, ms, ss)
        alone = [layer(images[i], ms[i], ss[i]) for i in range(3)]
    assert [tuple(o.shape) for o in out] == [(4, 40, 52), (2, 40, 52), (1, 40, 52)]
    for a, b in zip(out, alone, strict=True):
        assert torch.equal(a, b)  # each image on its own: the same arithmetic, the same bits
    assert torch.equal(out[2], torch.zeros(1, 40, 52))  # no instance: background everywhere


def test_training_the_calibration_lowers_the_loss():
    # A weak, shifted mask of the bright rectangle: fitting fg_bias and the rest by gradient
    # descent on cross-entropy against the true instance map must lower the loss.
    h, w = 32, 40
    im = np.full((h, w, 3), 30, np.uint8)
    im[8:24, 10:30] = 220
    target = np.zeros((h, w), np.int64)
    target[8:24, 10:30] = 1
    m = np.full((1, h, w), 0.05, np.float32)
    m[0, 10:26, 13:33] = 0.45  # under-confident and shifted by a few pixels
    layer = InstanceCRF(threads=1)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    x, t = torch.from_numpy(m), torch.from_numpy(target)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(_t(im), x)[None], t[None])
        loss.backward()
        assert all(torch.isfinite(p.grad) for p in layer.parameters())
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses  # halved: a clear gain, far beyond step noise


def test_gradient_reaches_the_masks_through_the_crf():
    im, masks, scores = _scene()
    x = torch.from_numpy(masks).requires_grad_()
    z = InstanceCRF(threads=1)(_t(im), x, torch.from_numpy(scores))
    z[1].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Instance 1's logits depend on mask 0 only through the mean field's messages and the
    # background's max over the masks: a gradient there has come through the CRF.
    assert x.grad[0].abs().sum() > 0


def test_inputs_are_not_modified():
    im, masks, scores = _scene()
    x, s, i = torch.from_numpy(masks.copy()), torch.from_numpy(scores.copy()), _t(im)
    before = (x.clone(), s.clone(), i.clone())
    InstanceCRF(threads=1)(i, x, s)
    assert torch.equal(x, before[0]) and torch.equal(s, before[1]) and torch.equal(i, before[2])


def test_bad_inputs_raise_clear_errors():
    im, masks, _ = _scene()
    layer = InstanceCRF()
    x = torch.from_numpy(masks)
    with pytest.raises(ValueError, match=r"masks must be a tensor \[M, H, W\]"):
        layer(_t(im), x[0])
    with pytest.raises(ValueError, match=r"image must be a tensor \[C, 40, 52\]"):
        layer(_t(im)[:, :20], x)
    with pytest.raises(ValueError, match=r"masks must lie in \[0, 1\].*1.5"):
        layer(_t(im), x * 0 + 1.5)
    with pytest.raises(ValueError, match=r"masks must lie in \[0, 1\]"):
        layer(_t(im), x * float("nan"))
    with pytest.raises(ValueError, match=r"one value per mask \(3\)"):
        layer(_t(im), x, torch.tensor([0.5]))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer(_t(im), x.half())
    with pytest.raises(ValueError, match="2 mask tensors need 2 images"):
        layer([_t(im)], [x, x])
    with pytest.raises(ValueError, match="joint CRF"):
        InstanceCRF.from_params(inst.InstanceParams(mode="binary"))
    with pytest.raises(ValueError, match="no refinement"):
        InstanceCRF.from_params(inst.InstanceParams.no_refinement())
    with pytest.raises(ValueError, match="min_prob"):
        InstanceCRF(min_prob=0.7)


def test_fixed_layer_has_no_parameters_and_weights_can_be_dropped():
    assert list(InstanceCRF(learn=False).parameters()) == []
    layer = InstanceCRF(gaussian_weight=None, threads=1)
    assert layer.terms == ("bilateral",) and layer.gaussian_weight is None
    im, masks, scores = _scene()
    prm = inst.InstanceParams(gaussian_weight=None)
    _, q = _numpy_q(im, masks, scores, prm)
    with torch.no_grad():
        z = layer(_t(im), torch.from_numpy(masks), torch.from_numpy(scores))
    np.testing.assert_allclose(torch.softmax(z, 0).numpy(), q, atol=1e-5)  # as the forward test above
