"""densecrf.nn.DenseCRFLoss against rloss's own DenseCRFLoss (meng-tang/rloss), on the CPU.

rloss is not vendored: build its SWIG module from the public source outside
the repository, then point --rloss at the checkout (the script imports
``pytorch/pytorch-deeplab_v3_plus/DenseCRFLoss.py`` from it, unchanged, and
its ``bilateralfilter`` module from the build folder):

    git clone https://github.com/meng-tang/rloss /tmp/rloss     # or any copy of it
    cd /tmp/rloss/pytorch/wrapper/bilateralfilter
    swig -python -c++ bilateralfilter.i
    LDFLAGS=-fopenmp python setup.py build      # its setup.py compiles with -fopenmp but does not link it

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/rloss_compare.py --rloss /tmp/rloss --repeats 11
    python benchmarks/rloss_compare.py --repeats 20      # on a GPU machine: densecrf's loss on the GPU alone

rloss's module calls ``.cuda()`` on the segmentation and on its gradient; the
script replaces ``torch.Tensor.cuda`` by the identity while rloss runs (the
only change), so that the whole of rloss's path runs on the CPU as written:
F.interpolate, numpy copies, ``bilateralfilter_batch`` (OpenMP over the
images of the batch), its backward ``-2 W S / N`` masked by the rois.

1. Agreement, on real CamVid frames (``$DENSECRF_CAMVID``, default
   /work/shared/data/camvid; read, never copied):
   a) two val frames resized to 512 x 512 (bilinear) with K = 21 synthetic
      softmaxes made from their annotations (benchmarks/workloads.py's
      probs_from_regions: the region's label preferred by 3.5 plus smooth
      and pixel noise), rois from the annotation (Unlabelled pixels out);
   b) one val frame at 480 x 360 with the bundled network's softmax
      (densecrf.models.pretrained(), K = 11), rois all ones.
   Both at scale_factor 1 and 0.5 (rloss trains with 0.5), sigma_rgb 15,
   sigma_xy 100 (rloss's training values). Reported: loss relative
   difference and gradient relative L2 difference over the whole
   segmentation tensor, for gradient='rloss' (rloss's -2 W S, must agree
   to 1e-3) and gradient='exact' (the exact adjoint: differs from rloss's by
   the lattice filter's asymmetry, (W - W^T) S; shown, not required).
2. Speed of one forward + backward, 2 images 512 x 512, K = 21, scale 1,
   rois all ones (rloss's training rois where a crop has no padding):
   one warm-up each, then --repeats rounds alternating rloss, densecrf
   exact, densecrf rloss-gradient; medians. rloss runs its filter with
   OpenMP (OMP_NUM_THREADS; 2 on the 2-core machine), densecrf with
   --threads native threads. On a machine with a GPU, densecrf's loss is
   timed there too (alone: rloss has no GPU path).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import os
import platform
import statistics
import sys
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import workloads  # noqa: E402
from densecrf.nn import DenseCRFLoss  # noqa: E402

SIGMA_RGB, SIGMA_XY = 15.0, 100.0
LOSS_TOL, GRAD_TOL = 1e-3, 1e-3


def load_rloss(root: str):
    """rloss's DenseCRFLoss module, imported from its own file."""
    builds = sorted(glob.glob(os.path.join(root, "pytorch", "wrapper", "bilateralfilter", "build", "lib*")))
    if not builds:
        sys.exit(
            f"no built bilateralfilter under {root}/pytorch/wrapper/bilateralfilter/build: see this script's docstring"
        )
    sys.path.insert(0, builds[0])
    # DenseCRFLoss.py imports dataloaders.custom_transforms.denormalizeimage,
    # which the loss never calls; importing the real package would pull in
    # the dataset readers (pycocotools, ...). A stand-in module is enough.
    pkg = types.ModuleType("dataloaders")
    ct = types.ModuleType("dataloaders.custom_transforms")
    ct.denormalizeimage = None
    pkg.custom_transforms = ct
    sys.modules.setdefault("dataloaders", pkg)
    sys.modules.setdefault("dataloaders.custom_transforms", ct)
    path = os.path.join(root, "pytorch", "pytorch-deeplab_v3_plus", "DenseCRFLoss.py")
    spec = importlib.util.spec_from_file_location("rloss_DenseCRFLoss", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def cuda_is_identity():
    """rloss's ``.cuda()`` calls, removed: Tensor.cuda returns the tensor itself."""
    orig = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = orig


# CamVid, read where it lies (never copied): $DENSECRF_CAMVID, else the shared folder beside the checkout.
CAMVID_DIR = os.environ.get(
    "DENSECRF_CAMVID",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "camvid"),
)


def camvid_frames(n: int, size: tuple[int, int] | None):
    """n val frames (image [H, W, 3] uint8, labels [H, W] uint8, name), resized to size=(W, H)."""
    from PIL import Image

    files = sorted(glob.glob(os.path.join(CAMVID_DIR, "val", "*.png")))
    if len(files) < n:
        sys.exit(f"need {n} CamVid val frames under {CAMVID_DIR}/val, found {len(files)}")
    picks = [files[(10 + 30 * i) % len(files)] for i in range(n)]
    out = []
    for p in picks:
        img = Image.open(p).convert("RGB")
        lab = Image.open(os.path.join(CAMVID_DIR, "valannot", os.path.basename(p)))
        if size is not None:
            img, lab = img.resize(size, Image.BILINEAR), lab.resize(size, Image.NEAREST)
        out.append((np.asarray(img), np.asarray(lab), os.path.basename(p)))
    return out


def synthetic_batch(size=(512, 512), k=21):
    frames = camvid_frames(2, size)
    images = torch.stack([torch.from_numpy(f[0].copy()).permute(2, 0, 1).float() for f in frames])
    probs = torch.stack(
        [torch.from_numpy(workloads.probs_from_regions(f[1], k, seed=i)).permute(2, 0, 1) for i, f in enumerate(frames)]
    ).contiguous()
    rois = torch.stack([torch.from_numpy((f[1] != 11).astype(np.float32)) for f in frames])
    return images, probs, rois, "+".join(f[2] for f in frames)


def network_batch():
    from densecrf.models import NET_SIZE, pretrained

    ((img, _, name),) = camvid_frames(1, None)
    net = pretrained()
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None]
    with torch.no_grad():
        small = torch.nn.functional.interpolate(x / 255.0, size=NET_SIZE[::-1], mode="bilinear", align_corners=False)
        logits = torch.nn.functional.interpolate(net(small), size=img.shape[:2], mode="bilinear", align_corners=False)
    return x, torch.softmax(logits, 1).contiguous(), torch.ones(1, *img.shape[:2]), name


def rloss_call(rl, scale, images, probs, rois, seg=None):
    seg = probs.clone().requires_grad_() if seg is None else seg
    mod = rl.DenseCRFLoss(weight=1.0, sigma_rgb=SIGMA_RGB, sigma_xy=SIGMA_XY, scale_factor=scale)
    with cuda_is_identity():
        loss = mod(images, seg, rois.clone())
        loss.backward()
    return float(loss.detach().reshape(())), seg.grad


def ours_call(scale, images, probs, rois, gradient, threads, seg=None):
    torch.set_num_threads(threads)  # rloss's omp_set_num_threads(B) also sets torch's OpenMP pool
    seg = probs.clone().requires_grad_() if seg is None else seg
    mod = DenseCRFLoss(1.0, SIGMA_RGB, SIGMA_XY, scale, gradient=gradient, threads=threads)
    loss = mod(images, seg, rois)
    loss.backward()
    return float(loss.detach()), seg.grad


def rloss_value_in_float64(rl, scale, images, probs, rois):
    """rloss's loss from its own filter output, summed in float64 (rloss sums
    S . W S with a float32 np.dot over B K H W terms)."""
    f = torch.nn.functional
    img = f.interpolate(images, scale_factor=scale)
    seg = f.interpolate(probs, scale_factor=scale, mode="bilinear", align_corners=False)
    roi = f.interpolate(rois.unsqueeze(1), scale_factor=scale).squeeze(1)
    b, k, h, w = seg.shape
    s = (seg * roi[:, None]).numpy().ravel()
    out = np.zeros(s.shape, np.float32)
    rl.bilateralfilter_batch(img.numpy().ravel(), s, out, b, k, h, w, SIGMA_RGB, SIGMA_XY * scale)
    return -float(np.dot(s.astype(np.float64), out.astype(np.float64))) / b


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def agreement(rl, threads) -> bool:
    ok = True
    print(
        f"== agreement (sigma_rgb {SIGMA_RGB}, sigma_xy {SIGMA_XY}; loss: |ours - rloss| / |rloss|, "
        f"gradient: ||ours - rloss||_2 / ||rloss||_2 over the whole tensor)"
    )
    cases = [("512x512 K=21 annotation softmax", synthetic_batch()), ("480x360 K=11 network softmax", network_batch())]
    for label, (images, probs, rois, src) in cases:
        for scale in (1.0, 0.5):
            ref_loss, ref_grad = rloss_call(rl, scale, images, probs, rois)
            ref64 = rloss_value_in_float64(rl, scale, images, probs, rois)
            print(
                f"  {label:32s} scale {scale:<4} rloss's value {ref_loss:.6e}, its own filter output summed "
                f"in float64 {ref64:.6e} (relative {abs(ref_loss - ref64) / abs(ref64):.1e})"
            )
            for gradient in ("rloss", "exact"):
                loss, grad = ours_call(scale, images, probs, rois, gradient, threads)
                dl = abs(loss - ref_loss) / abs(ref_loss)
                dl64 = abs(loss - ref64) / abs(ref64)
                dg = rel_l2(grad, ref_grad)
                need = gradient == "rloss"
                good = dl <= LOSS_TOL and (dg <= GRAD_TOL or not need)
                ok &= good or not need
                print(
                    f"  {label:32s} scale {scale:<4} gradient={gradient:6s} loss {loss:.6e}  dloss {dl:.2e} "
                    f"(vs float64 sum {dl64:.1e})  dgrad {dg:.2e}  "
                    f"{'ok' if good else ('FAIL' if need else '(asymmetry of W)')}"
                )
        print(f"    images: {src}")
    return ok


def timing(rl, repeats, threads, scale):
    images, probs, _, src = synthetic_batch()
    rois = torch.ones(probs.shape[0], *probs.shape[2:])  # rloss's training rois: all ones where nothing is padded
    print(
        f"== forward + backward, 2 x 512 x 512, K = 21, scale_factor {scale}, rois all ones ({src}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, densecrf threads {threads}, "
        f"torch threads {threads} (set before each densecrf call)"
    )
    runs = {
        "rloss (bilateralfilter, OpenMP)": lambda seg: rloss_call(rl, scale, images, probs, rois, seg),
        "densecrf gradient='exact'": lambda seg: ours_call(scale, images, probs, rois, "exact", threads, seg),
        "densecrf gradient='rloss'": lambda seg: ours_call(scale, images, probs, rois, "rloss", threads, seg),
    }
    times = {k: [] for k in runs}
    for f in runs.values():  # warm-up
        f(probs.clone().requires_grad_())
    for _ in range(repeats):
        for k, f in runs.items():
            seg = probs.clone().requires_grad_()  # the network's output: not part of the timed call
            t0 = time.perf_counter()
            f(seg)
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["rloss (bilateralfilter, OpenMP)"])
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"  {k:34s} median {med * 1e3:8.1f} ms  min {min(ts) * 1e3:8.1f} ms  speed-up {base / med:5.2f}x")


def timing_cuda(repeats):
    """densecrf's loss alone on the GPU (rloss cannot run there), synchronised around each call."""
    import densecrf

    if not (torch.cuda.is_available() and densecrf.cuda_available()):
        print("== GPU: none visible (or densecrf built without CUDA); skipped")
        return
    images, probs, _, src = synthetic_batch()
    images, probs = images.cuda(), probs.cuda()
    rois = torch.ones(probs.shape[0], *probs.shape[2:], device="cuda")
    print(f"== GPU {torch.cuda.get_device_name()}: forward + backward, 2 x 512 x 512, K = 21, scale_factor 1 ({src})")
    for gradient in ("exact", "rloss"):
        mod = DenseCRFLoss(1.0, SIGMA_RGB, SIGMA_XY, 1.0, gradient=gradient)
        ts = []
        for r in range(repeats + 1):
            seg = probs.clone().requires_grad_()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            mod(images, seg, rois).backward()
            torch.cuda.synchronize()
            if r:  # the first call is the warm-up
                ts.append(time.perf_counter() - t0)
        print(
            f"  densecrf gradient={gradient!r:8s} median {statistics.median(ts) * 1e3:8.2f} ms  "
            f"min {min(ts) * 1e3:8.2f} ms"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--rloss",
        help="rloss checkout with its bilateralfilter built (see the docstring); without it only the GPU timing runs",
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="densecrf's native threads")
    ap.add_argument("--scale", type=float, default=1.0, help="scale_factor of the timed call")
    ap.add_argument("--skip-agreement", action="store_true")
    args = ap.parse_args()
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, torch {torch.__version__}"
    )
    ok = True
    if args.rloss:
        rl = load_rloss(args.rloss)
        if not args.skip_agreement:
            ok = agreement(rl, args.threads)
        timing(rl, args.repeats, args.threads, args.scale)
    else:
        print("== no --rloss: the comparison with rloss is skipped")
    timing_cuda(args.repeats)
    if not ok:
        print("rloss-gradient agreement outside 1e-3: FAIL")
        sys.exit(1)


if __name__ == "__main__":
    main()
