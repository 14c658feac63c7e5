"""Training under the cross-drive fold protocol (issue "A bundled network that holds up").

    python -m densecrf.models.folds --data ../shared/data/camvid --fold A --recipe strong --out runs/A_strong
    python -m densecrf.models.folds ... --fold A --init runs/A_strong/final.pt --head crf --out runs/A_crf

A fold (``densecrf.models.camvid.FOLDS``) trains on two drives of CamVid's
train split; its third drive and val are for reporting only. Nothing here
looks at them while training: the schedule is fixed in advance (``--epochs``,
cut to what ``--max-seconds`` allows, measured before the first step and
written to the log), and the model kept is the last one (``final.pt``), not
the best on some held-out score. At the end the network alone is scored on
the fold's held-out drive and on val (``result.json``), for the record.

Recipes (``densecrf.models.recipe``): ``classic``, today's bundled recipe
(whole frames at 240 x 180, flips, unweighted cross-entropy); ``strong``,
full-resolution 480 x 360 crops of frames scaled 0.5-2x, flips, photometric
jitter, median-frequency class weights. Both use AdamW with a one-cycle
schedule per step. ``--sparse scribbles`` trains on skeleton strokes of the
ground truth's regions (partial cross-entropy), optionally with
``--crf-loss WEIGHT`` (``densecrf.losses.DenseCRFLoss``, rloss's settings).
``--head crf`` fine-tunes ``--init``'s network with a CRF-as-RNN head on top;
``--head none`` runs the same fine-tune without it (the matched control).

Frames are decoded once and held on the device (``--device cuda`` puts them
and the augmentation on the GPU). Resumes from ``OUT/last.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import SegmentationMetrics
from . import camvid, recipe
from .deeplab import DeepLabCRF, DeepLabLite, logits_at_size
from .unet import UNet

N_CLASSES = len(camvid.CLASSES)
#: rloss's DenseCRFLoss settings for DeepLab (Tang et al., ECCV 2018; meng-tang/rloss README)
RLOSS = {"sigma_rgb": 15.0, "sigma_xy": 80.0, "scale_factor": 0.5}


def train_pairs(root: str, fold: str):
    """A fold's training frames; fold 'all' is every train and val frame (the shipped model's data)."""
    if fold == "all":
        return camvid.list_split(root, "train") + camvid.list_split(root, "val")
    return camvid.fold_split(root, fold, "train")


def build_network(arch: str, width: int):
    if arch == "deeplab":
        return DeepLabLite(N_CLASSES, width)
    if arch == "unet":
        return UNet(N_CLASSES, width)
    raise ValueError(f"arch must be 'deeplab' or 'unet', got {arch!r}")


def load_network(path: str, map_location="cpu"):
    """The network of a ``final.pt`` written here (any arch), in eval mode, and its training args."""
    ck = torch.load(path, map_location=map_location)
    a = ck["args"]
    net = build_network(a["arch"], a["width"])
    state = {k[len("net.") :]: v for k, v in ck["model"].items() if k.startswith("net.")} or ck["model"]
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.eval(), a


def net_size_of(args: dict):
    """The (W, H) a model's network sees whole frames at: 240 x 180 for the classic recipe, else native."""
    return (240, 180) if args.get("recipe") == "classic" else None


def score(net, pairs, *, net_size=None, device="cpu", batch=4, scales=(1.0,), flip=False):
    """Confusion-matrix metrics of a network over (image, label) pairs at the labels' resolution."""
    m = SegmentationMetrics(N_CLASSES, ignore_index=camvid.IGNORE_INDEX)
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            xs, ys = [], []
            for image_path, label_path in pairs[i : i + batch]:
                image, labels = camvid.load_pair(image_path, label_path)
                xs.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0)
                ys.append(labels)
            x = torch.stack(xs).to(device)
            logits = predict_logits(net, x, net_size=net_size, scales=scales, flip=flip)
            m.update(logits.argmax(1).cpu().numpy(), np.stack(ys))
    return m


def predict_logits(net, x, *, net_size=None, scales=(1.0,), flip=False):
    """Logits at x's size: the network at ``net_size`` (or native), an image pyramid over ``scales``,
    and the mirrored image's logits mirrored back and averaged in when ``flip``."""

    def run(t):
        if tuple(scales) == (1.0,):
            return logits_at_size(net, t, net_size)
        return logits_at_size(lambda u: net(u, scales=scales), t, net_size)

    out = run(x)
    if flip:
        out = (out + run(x.flip(3)).flip(3)) / 2
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m densecrf.models.folds", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="CamVid folder (train/, trainannot/, val/, valannot/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fold", required=True, choices=("A", "B", "all"))
    ap.add_argument("--arch", default="deeplab", choices=("deeplab", "unet"))
    ap.add_argument("--width", type=int, default=None, help="first-stage channels (deeplab 32, unet 24)")
    ap.add_argument("--recipe", default="strong", choices=("classic", "strong"))
    ap.add_argument(
        "--crop", type=int, nargs=2, default=None, metavar=("W", "H"), help="strong recipe's crop size (480 360)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="classic 60, strong 150, fine-tunes 20")
    ap.add_argument("--max-seconds", type=float, default=0, help="cut --epochs to what fits, measured first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="classic 2e-3, strong 2e-3, fine-tunes 2e-4")
    ap.add_argument("--class-weights", default=None, choices=("none", "median"), help="classic none, strong median")
    ap.add_argument("--sparse", default="none", choices=("none", "scribbles"))
    ap.add_argument("--crf-loss", type=float, default=0.0, metavar="WEIGHT", help="DenseCRFLoss weight (rloss: 2e-9)")
    ap.add_argument("--init", default=None, help="a final.pt to start the network from (fine-tunes)")
    ap.add_argument("--head", default=None, choices=("none", "crf"), help="fine-tune --init with/without CRF-as-RNN")
    ap.add_argument("--crf-lr", type=float, default=2e-2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="none", choices=("none", "bf16"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", default="heldout,val", help="splits scored at the end ('' for none)")
    ap.add_argument("--workers", type=int, default=1, help="processes decoding the frames (and making scribbles)")
    ap.add_argument("--limit", type=int, default=0, help="use only this many training frames (smoke runs)")
    args = ap.parse_args(argv)

    if args.head and not args.init:
        ap.error("--head fine-tunes a trained network: give --init")
    if args.crf_loss and args.sparse == "none":
        ap.error("--crf-loss is the weakly-supervised loss: use it with --sparse")
    if args.init:  # the fine-tune inherits the network and its recipe
        init_args = torch.load(args.init, map_location="cpu")["args"]
        args.arch, args.width, args.recipe = init_args["arch"], init_args["width"], init_args["recipe"]
    width = args.width or (32 if args.arch == "deeplab" else 24)
    args.width = width
    fine = args.head is not None
    epochs = args.epochs or (20 if fine else 60 if args.recipe == "classic" else 150)
    lr = args.lr or (2e-4 if fine else 2e-3)
    weighting = args.class_weights or ("none" if args.recipe == "classic" or args.sparse != "none" else "median")
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "log.txt")

    def log(msg):
        print(msg, flush=True)
        with open(log_path, "a") as fh:
            fh.write(msg + "\n")

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    pairs = train_pairs(args.data, args.fold)
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]
    aug = recipe.CLASSIC if args.recipe == "classic" else recipe.STRONG
    if args.crop and args.recipe == "strong":
        aug = dataclasses.replace(aug, crop=tuple(args.crop))
    size = (240, 180) if args.recipe == "classic" else None
    label_fn = None
    if args.sparse == "scribbles":
        label_fn = partial(recipe.scribbles, n_classes=N_CLASSES, ignore_index=camvid.IGNORE_INDEX)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t0 = time.time()
    bank = recipe.FrameBank(pairs, device=device, size=size, label_fn=label_fn, workers=args.workers)
    labelled = float((bank.labels != camvid.IGNORE_INDEX).float().mean())
    log(
        f"{len(bank)} frames of fold {args.fold} on {device} in {time.time() - t0:.1f} s; labelled pixels {labelled:.4f}"
    )

    net = build_network(args.arch, width)
    if args.init:
        init_net, _ = load_network(args.init)
        net.load_state_dict(init_net.state_dict())
    if args.head == "crf":
        # bandwidths of the bundled fine-tune, in full-resolution pixels; the network runs at its own size
        model = DeepLabCRF(N_CLASSES, width, net_size=net_size_of(vars(args)), per_class_weights=True)
        model.net = net
        train_net_size = net_size_of(vars(args))
    else:
        model = net
    # channels-last pays on the GPU; on the CPU torch 2.13 segfaulted in the backward pass of a
    # width-4 DeepLabLite in that layout (a 3 x 360 x 480 batch of 2; width 8 and up ran), so
    # the CPU keeps the default layout
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt)
    if args.head == "crf":
        groups = [
            {"params": model.net.parameters(), "lr": lr, "weight_decay": 1e-4},
            {"params": model.crf.parameters(), "lr": args.crf_lr, "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": model.parameters(), "lr": lr, "weight_decay": 1e-4}]
    opt = torch.optim.AdamW(groups)
    weights = None
    if weighting == "median":
        weights = recipe.median_frequency_weights(bank.labels, N_CLASSES, camvid.IGNORE_INDEX).to(device)
        log("class weights " + " ".join(f"{w:.2f}" for w in weights.tolist()))
    crf_loss = None
    if args.crf_loss:
        from ..losses import DenseCRFLoss

        crf_loss = DenseCRFLoss(args.crf_loss, **RLOSS)
    steps_per_epoch = (len(bank) + args.batch - 1) // args.batch

    def step(index, train=True):
        x, y, inside = recipe.sample_batch(bank, index, aug, gen)
        xc = x.contiguous(memory_format=fmt)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            out = model.network_logits(xc) if args.head == "crf" else model(xc)
        if args.head == "crf":  # the mean field in float32, on contiguous tensors
            out = model.crf(out.float().contiguous(), x * 255.0)
        loss = F.cross_entropy(out.float(), y, weight=weights, ignore_index=camvid.IGNORE_INDEX)
        if crf_loss is not None:
            seg = torch.softmax(out.float(), 1)
            loss = loss + crf_loss(x * 255.0, seg, inside)
        if train:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss

    last = os.path.join(args.out, "last.pt")
    start = 0
    if os.path.exists(last):
        ck = torch.load(last, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, epochs = ck["epoch"] + 1, ck["epochs"]
        gen.set_state(ck["gen"])
        log(f"resumed from {last} at epoch {start} of {epochs}")
    elif args.max_seconds:
        # time a few forward + backward passes (no update) to cut the schedule to the budget
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.train()
        idx = list(range(min(args.batch, len(bank))))
        for i in range(4):
            if i == 1:  # the first pass warms up (allocations, kernel choice)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.time()
            step(idx, train=False).backward()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_epoch = (time.time() - t) / 3 * steps_per_epoch * 1.1  # 1.1: the optimizer step and sampling
        fit = int(args.max_seconds / per_epoch)
        log(f"{per_epoch:.2f} s per epoch measured: {min(epochs, fit)} of {epochs} epochs fit {args.max_seconds} s")
        epochs = max(1, min(epochs, fit))
        model.load_state_dict(initial)  # the timing passes changed batch-norm statistics only
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=max(1, epochs * steps_per_epoch)
    )
    for _ in range(start * steps_per_epoch):
        sched.step()
    if args.head == "crf":
        model.net_size = train_net_size
    for epoch in range(start, epochs):
        model.train()
        order = torch.randperm(len(bank), generator=gen).tolist()
        t, losses = time.time(), []
        for i in range(0, len(order), args.batch):
            losses.append(step(order[i : i + args.batch]).detach())
            sched.step()
        mean = float(torch.stack(losses).mean())
        log(f"epoch {epoch + 1}/{epochs} loss {mean:.4f} {time.time() - t:.1f} s")
        ck = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "epochs": epochs}
        ck["gen"] = gen.get_state()
        torch.save(ck, last + ".tmp")
        os.replace(last + ".tmp", last)

    saved = dict(vars(args), epochs=epochs, lr=lr, class_weights=weighting, labelled=labelled)
    final = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "args": saved}
    if args.head == "crf":
        final["crf"] = model.crf.to_params().to_dict()
    torch.save(final, os.path.join(args.out, "final.pt.tmp"))
    os.replace(os.path.join(args.out, "final.pt.tmp"), os.path.join(args.out, "final.pt"))

    result = {"args": saved, "train_frames": len(bank), "seconds": time.time() - t0}
    for split in [s for s in args.eval.split(",") if s]:
        if args.fold == "all" and split == "heldout":
            continue  # the shipped model has no held-out drive
        fold = args.fold if args.fold != "all" else "A"
        eval_pairs = camvid.fold_split(args.data, fold, split)
        if args.limit:
            eval_pairs = eval_pairs[: args.limit]
        model.eval()
        if args.head == "crf":
            model.net_size = net_size_of(saved)
            m = score(lambda t: model(t, output="crf"), eval_pairs, device=device)
        else:
            m = score(model, eval_pairs, net_size=net_size_of(saved), device=device)
        result[split] = {"miou": m.mean_iou(), "pixel_acc": m.pixel_accuracy(), "frames": len(eval_pairs)}
        log(f"{split}: mIoU {m.mean_iou():.4f} pixel acc {m.pixel_accuracy():.4f} ({len(eval_pairs)} frames)")
    with open(os.path.join(args.out, "result.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
