"""Training of DeepLabLite (and fine-tuning with the CRF-as-RNN head) on CamVid.

    python -m densecrf.models.train --data ../shared/data/camvid --out runs/deeplab
    torchrun --nproc_per_node 2 -m densecrf.models.train --data ... --out ...   # DDP (gloo on CPU)

Resumes from OUT/last.pt when it exists; logs loss and validation mean IoU
per epoch to OUT/log.csv; keeps the best model by validation mIoU in
OUT/best.pt. Reproducible from --seed (data order, flips, initialisation).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..metrics import SegmentationMetrics
from . import camvid
from .deeplab import DeepLabCRF, DeepLabLite, logits_at_size


def evaluate(
    model, data, *, output: str | None = None, batch: int = 4, input_size: tuple[int, int] | None = None
) -> SegmentationMetrics:
    """Confusion-matrix metrics of the model over a dataset, at the labels' resolution.

    ``input_size`` = (W, H) resizes the images the network sees (the size it
    was trained at); its logits are resized back to the labels' size.
    """
    m = SegmentationMetrics(len(camvid.CLASSES), ignore_index=camvid.IGNORE_INDEX)
    model.eval()
    with torch.no_grad():
        for i in range(0, len(data), batch):
            xs, ys = zip(*[data[j] for j in range(i, min(i + batch, len(data)))], strict=True)
            x, y = torch.stack(xs), torch.stack(ys)
            net = model if output is None else (lambda t: model(t, output=output))
            logits = logits_at_size(net, x, input_size)
            if logits.shape[2:] != y.shape[1:]:  # labels at another size than the images
                logits = F.interpolate(logits, size=y.shape[1:], mode="bilinear", align_corners=False)
            m.update(logits.argmax(1).numpy(), y.numpy())
    return m


def main(argv=None, *, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    """Trains as the module docstring says; ``parser_class`` lets ``densecrf train`` print its errors its way."""
    ap = parser_class(prog="densecrf train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="CamVid folder (train/, trainannot/, val/, valannot/)")
    ap.add_argument("--out", required=True, help="folder for checkpoints and the log")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 180), metavar=("W", "H"))
    ap.add_argument("--crf", action="store_true", help="fine-tune with the CRF-as-RNN head (from --init)")
    ap.add_argument("--init", default=None, help="network weights to start from")
    ap.add_argument("--crf-lr", type=float, default=2e-2, help="learning rate of the CRF's parameters (--crf)")
    ap.add_argument("--crf-iter", type=int, default=5, help="mean-field iterations of the CRF-as-RNN head")
    ap.add_argument(
        "--crf-spatial",
        type=float,
        nargs=2,
        default=(3.0, 1.0),
        metavar=("SXY", "WEIGHT"),
        help="initial smoothness term (full-resolution pixels)",
    )
    ap.add_argument(
        "--crf-bilateral",
        type=float,
        nargs=3,
        default=(80.0, 13.0, 3.0),
        metavar=("SXY", "SRGB", "WEIGHT"),
        help="initial appearance term",
    )
    ap.add_argument(
        "--crf-params",
        default=None,
        metavar="FILE.json",
        help="with --crf: start the head from these dense-CRF parameters (densecrf.params JSON, e.g. "
        "`densecrf fit` on train-split outputs) instead of --crf-spatial/--crf-bilateral",
    )
    ap.add_argument(
        "--crop",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="with --crf: train on random full-resolution crops of this size (the network sees them "
        "scaled as in --size)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-batches", type=int, default=0, help="stop each epoch after this many batches (smoke runs)")
    args = ap.parse_args(argv)

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    n_classes = len(camvid.CLASSES)
    crf_init = None
    if args.crf:
        if args.crf_params:
            from ..params import as_params

            crf_init = as_params(args.crf_params).to_dict()
            crf_init["n_iter"] = args.crf_iter
        model = DeepLabCRF.from_training_args(n_classes, vars(args), crf_init)
    else:
        model = DeepLabLite(n_classes, args.width)
    if args.init:
        state = torch.load(args.init, map_location="cpu")["model"]
        (model.net if args.crf else model).load_state_dict(state)
    if args.crf:  # the CRF's few parameters learn faster and without weight decay (it would pull Potts to 0)
        groups = [
            {"params": model.net.parameters(), "lr": args.lr, "weight_decay": 1e-4},
            {"params": model.crf.parameters(), "lr": args.crf_lr, "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": model.parameters(), "lr": args.lr, "weight_decay": 1e-4}]
    opt = torch.optim.AdamW(groups)
    start, best = 0, -1.0
    last = os.path.join(args.out, "last.pt")
    if os.path.exists(last):
        ck = torch.load(last, map_location="cpu")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, best = ck["epoch"] + 1, ck["best"]
        if rank == 0:
            print(f"resumed from {last} at epoch {start}")
    ddp = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    if args.crf:  # full resolution: the network resizes internally, the CRF sees the real edges
        train = camvid.CamVid(
            args.data, "train", flip=True, seed=args.seed, crop=tuple(args.crop) if args.crop else None
        )
        val = camvid.CamVid(args.data, "val")
        train_net_size = tuple(args.size)
        if args.crop:  # the network sees crops at the scale it sees whole images
            full = camvid.load_pair(*train.pairs[0])[1].shape
            train_net_size = (
                round(args.crop[0] * args.size[0] / full[1]),
                round(args.crop[1] * args.size[1] / full[0]),
            )
        model.net_size = train_net_size
    else:
        train = camvid.CamVid(args.data, "train", size=tuple(args.size), flip=True, seed=args.seed)
        val = camvid.CamVid(args.data, "val", size=tuple(args.size))
    max_lr = [g["lr"] for g in groups]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, total_steps=max(1, args.epochs), last_epoch=start - 1 if start else -1
    )
    for epoch in range(start, args.epochs):
        model.train()
        order = np.random.default_rng(args.seed + epoch).permutation(len(train))[rank::world]
        t0, losses = time.time(), []
        for b, i in enumerate(range(0, len(order), args.batch)):
            if args.max_batches and b >= args.max_batches:
                break
            xs, ys = zip(*[train[int(j)] for j in order[i : i + args.batch]], strict=True)
            x, y = torch.stack(xs), torch.stack(ys)
            out = ddp(x, output="crf") if args.crf else ddp(x)
            loss = F.cross_entropy(out, y, ignore_index=camvid.IGNORE_INDEX)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if rank == 0:
                print(
                    f"\repoch {epoch} batch {b + 1}/{(len(order) + args.batch - 1) // args.batch} "
                    f"loss {np.mean(losses):.4f}",
                    end="",
                    flush=True,
                )
        sched.step()
        if rank == 0:
            if args.crf:
                model.net_size = tuple(args.size)  # whole frames at evaluation
            m = evaluate(model, val, output="crf" if args.crf else None)
            if args.crf:
                model.net_size = train_net_size
            miou = m.mean_iou()
            print(
                f"\repoch {epoch}: loss {np.mean(losses):.4f}, val mIoU {miou:.4f}, "
                f"pixel acc {m.pixel_accuracy():.4f}, {time.time() - t0:.0f} s"
            )
            with open(os.path.join(args.out, "log.csv"), "a") as fh:
                fh.write(f"{epoch},{np.mean(losses):.5f},{miou:.5f},{m.pixel_accuracy():.5f}\n")
            ck = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "epoch": epoch,
                "best": max(best, miou),
                "args": vars(args),
            }
            torch.save(ck, last + ".tmp")
            os.replace(last + ".tmp", last)
            if miou > best:
                best = miou
                torch.save(
                    {
                        "model": model.state_dict(),
                        "miou": miou,
                        "crf": args.crf,
                        "crf_init": crf_init,
                        "args": vars(args),
                    },
                    os.path.join(args.out, "best.pt"),
                )
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
