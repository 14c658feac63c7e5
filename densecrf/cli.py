"""Command line: ``densecrf demo | refine | eval | fit | train | bench``.

Each command reports bad input (missing files, unreadable images, shapes
that do not fit, bad parameters) as one line ``densecrf <cmd>: error: ...``
on stderr and exits with status 2, never with a traceback. Images are read
with scikit-image, figures drawn with matplotlib and the networks run with
torch: all three are imported only by the commands that need them (extras
``cli``, ``models`` and ``demo`` = both).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import sys
import time
import warnings

import numpy as np

from .fit import add_parser as _add_fit_parser

# Which extra brings which import (for the one-line "install ..." error).
_EXTRA_OF = {"skimage": ("scikit-image", "cli"), "matplotlib": ("matplotlib", "cli"),
             "torch": ("torch", "models"), "PIL": ("pillow", "cli")}


class CLIError(ValueError):
    """A user-facing error: printed as one line, exit status 2 (a ValueError for callers outside the CLI)."""


def _need(module: str):
    """Imports ``module``, or raises CLIError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg, extra = _EXTRA_OF.get(module.split(".")[0], (module.split(".")[0], "demo"))
        raise CLIError(f"this command needs {pkg}: pip install 'densecrf[{extra}]'") from None


def _exists(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise CLIError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{what} is a folder, expected a file: {path}")
    return path


# -- reading and writing -------------------------------------------------------
def read_image(path: str, what: str = "IMAGE") -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB (grey and RGBA converted with skimage.color)."""
    _exists(path, what)
    io, color, util = _need("skimage.io"), _need("skimage.color"), _need("skimage.util")
    try:
        with warnings.catch_warnings():  # imageio tries every plugin on a non-image and some warn as they go
            warnings.simplefilter("ignore")
            img = io.imread(path)
    except Exception:  # imageio's message spans lines and names plugins: say what it means
        raise CLIError(f"{what} {path} is not a readable image file") from None
    if img.ndim == 2:
        img = color.gray2rgb(img)
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = color.rgba2rgb(img)
    elif img.ndim == 3 and img.shape[-1] == 2:  # grey + alpha
        img = color.gray2rgb(img[..., 0])
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
        raise CLIError(f"{what} {path} must be a 2-D grey or colour image, got an array of shape {img.shape}")
    return util.img_as_ubyte(img) if img.dtype != np.uint8 else img


def read_labels(path: str, what: str = "label image") -> np.ndarray:
    """A label PNG (palette or grey, one class index per pixel) as ``[H, W]`` int64."""
    _exists(path, what)
    Image = _need("PIL.Image")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                raise CLIError(f"{what} {path} must hold one class index per pixel (a palette or grey PNG), "
                               f"got a {im.mode} image")
            return np.asarray(im, dtype=np.int64)
    except CLIError:
        raise
    except Exception:
        raise CLIError(f"{what} {path} is not a readable image file") from None


def voc_palette(n: int = 256) -> np.ndarray:
    """``[n, 3]`` uint8: the PASCAL VOC colour map (bits of the index spread over R, G, B)."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * shift + ch)) & 1) << (7 - shift)
    return pal.astype(np.uint8)


def _palette(name: str) -> np.ndarray:
    if name == "camvid":
        from .models.camvid import PALETTE

        return PALETTE
    return voc_palette()


def write_labels(path: str, labels: np.ndarray, palette: np.ndarray) -> None:
    """Writes ``[H, W]`` labels as an 8-bit palette PNG (16-bit grey above 256 labels)."""
    Image = _need("PIL.Image")
    if labels.max(initial=0) < 256:
        im = Image.fromarray(labels.astype(np.uint8))
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[:len(palette)] = palette[:256]
        im.putpalette(pal.ravel().tolist())  # makes the grey image a palette ("P") image
    else:
        im = Image.fromarray(labels.astype(np.uint16))
    im.save(path, format="PNG")


def _output_paths(out: str) -> tuple[str, str]:
    """(labels .png, probabilities .npy) from ``-o``: OUT.png, OUT.npy or a stem for both."""
    stem, ext = os.path.splitext(out)
    if ext.lower() not in (".png", ".npy"):
        stem = out
    folder = os.path.dirname(os.path.abspath(stem))
    if not os.path.isdir(folder):
        raise CLIError(f"output folder does not exist: {os.path.dirname(out) or '.'}")
    return stem + ".png", stem + ".npy"


def read_npy(path: str, what: str) -> np.ndarray:
    """A .npy array (no pickled objects); CLIError naming ``what`` and the file otherwise."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # not a .npy file, truncated, or pickled objects
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CLIError(f"could not read {what} from {path} (expected a .npy array): {first}") from None


def _is_npy(path: str) -> bool:
    if path.lower().endswith(".npy"):
        return True
    with open(path, "rb") as fh:
        return fh.read(6) == b"\x93NUMPY"


def _labels_to_probs(labels: np.ndarray, n_labels, gt_prob: float, unknown, source: str) -> np.ndarray:
    """``[H, W, K]`` probabilities of a hard label map (pydensecrf's unary_from_labels, as probabilities)."""
    import densecrf

    if n_labels is None:
        raise CLIError(f"PROBS {source} is a label map: give the number of labels with --n-labels K")
    known = labels if unknown is None else labels[labels != unknown]
    if known.size and (known.min() < 0 or known.max() >= n_labels):
        raise CLIError(f"PROBS {source} has labels in [{known.min()}, {known.max()}], outside [0, {n_labels}) "
                       f"for --n-labels {n_labels}" + ("" if unknown is not None else " (see --unknown)"))
    unary = densecrf.unary_from_labels(labels, n_labels, gt_prob=gt_prob, unknown=unknown)
    probs = np.exp(-unary.astype(np.float64))
    probs /= probs.sum(-1, keepdims=True)
    return probs.reshape(*labels.shape, n_labels).astype(np.float32)


def read_probs(path: str, hw: tuple[int, int], args=None) -> np.ndarray:
    """PROBS as ``[H, W, K]`` probabilities: a .npy of probabilities, a .npy of labels or a label PNG."""
    _exists(path, "PROBS")
    if _is_npy(path):
        arr = read_npy(path, "probabilities")
        if arr.ndim == 2 and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            labels = arr.astype(np.int64)
        else:
            if arr.ndim != 3:
                raise CLIError(f"PROBS {path} must be [H, W, K] probabilities (or [H, W] integer labels), "
                               f"got an array of shape {arr.shape}")
            if not (np.issubdtype(arr.dtype, np.floating)):
                raise CLIError(f"PROBS {path} must hold floating-point probabilities, got dtype {arr.dtype}")
            if arr.shape[:2] != tuple(hw):
                raise CLIError(f"PROBS {path} has shape {arr.shape} but IMAGE is {hw[0]} x {hw[1]} (H x W): "
                               f"expected ({hw[0]}, {hw[1]}, K)")
            return arr
    else:
        labels = read_labels(path, "PROBS")
    if labels.shape != tuple(hw):
        raise CLIError(f"PROBS {path} is a {labels.shape[0]} x {labels.shape[1]} label map but IMAGE is "
                       f"{hw[0]} x {hw[1]} (H x W)")
    return _labels_to_probs(labels, getattr(args, "n_labels", None), getattr(args, "gt_prob", 0.5),
                            getattr(args, "unknown", None), path)


# -- CRF parameters from --params and flags ------------------------------------
def _compat_type(text: str):
    if text.lower() == "none":
        return "none"
    return float(text)


def _srgb_type(text: str):
    parts = text.split(",")
    vals = [float(p) for p in parts]
    return vals[0] if len(vals) == 1 else vals


def _add_crf_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dense CRF parameters (default: pydensecrf's classic ones, or --params)")
    g.add_argument("--params", metavar="FILE.json", default=None,
                   help="CRF parameters from a JSON file (densecrf.params); the flags below override it")
    g.add_argument("--iters", type=int, default=None, help="mean-field iterations (5)")
    g.add_argument("--gaussian-sxy", type=float, default=None, help="smoothness bandwidth in pixels (3)")
    g.add_argument("--gaussian-compat", type=_compat_type, default=None,
                   help="smoothness Potts weight (3); 'none' drops the term")
    g.add_argument("--bilateral-sxy", type=float, default=None, help="appearance bandwidth in pixels (80)")
    g.add_argument("--bilateral-srgb", type=_srgb_type, default=None,
                   help="appearance colour bandwidth, one number or R,G,B (13)")
    g.add_argument("--bilateral-compat", type=_compat_type, default=None,
                   help="appearance Potts weight (10); 'none' drops the term")
    g.add_argument("--normalization", choices=("symmetric", "before", "after", "none"), default=None,
                   help="kernel normalisation (symmetric)")
    g.add_argument("--threads", type=int, default=None, help="native threads (default: all cores)")


_FLAG_FIELDS = {"iters": "n_iter", "gaussian_sxy": "gaussian_sxy", "gaussian_compat": "gaussian_compat",
                "bilateral_sxy": "bilateral_sxy", "bilateral_srgb": "bilateral_srgb",
                "bilateral_compat": "bilateral_compat", "normalization": "normalization"}


def crf_params(args, default_file: str | None = None):
    """CRFParams: ``--params`` (or ``default_file`` if it exists), then the flags given on the command line."""
    from .params import CRFParams, as_params

    path = args.params or (default_file if default_file and os.path.exists(default_file) else None)
    if path is not None:
        _exists(path, "params file")
        try:
            base = as_params(path)
        except ValueError as exc:
            msg = str(exc).splitlines()[0]
            raise CLIError(msg if path in msg else f"params file {path}: {msg}") from None
    else:
        base = CRFParams()
    over = {}
    for flag, fld in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            over[fld] = None if value == "none" else value
    return dataclasses.replace(base, **over) if over else base


def _describe(params) -> str:
    srgb = params.bilateral_srgb
    return (f"{params.n_iter} iterations, gaussian sxy {params.gaussian_sxy:g} compat {_short(params.gaussian_compat)}, "
            f"bilateral sxy {params.bilateral_sxy:g} srgb {srgb if isinstance(srgb, list) else f'{srgb:g}'} "
            f"compat {_short(params.bilateral_compat)}")


def _short(compat) -> str:
    if compat is None:
        return "none"
    if isinstance(compat, float):
        return f"{compat:g}"
    return f"[{np.asarray(compat).shape[0]} classes]"


# -- networks --------------------------------------------------------------------
@contextlib.contextmanager
def _one_torch_thread():
    """torch on one thread inside, its previous setting restored after.

    The networks see a 240 x 180 input, too small to gain from torch's thread
    pool, and on a busy machine its spinning threads cost far more than they
    give: measured here beside two CPU-bound jobs, the network took 0.2 s on
    one thread and 0.7 s on two, the whole CRF-as-RNN model 0.7 s and 2.5 s.
    The dense CRF's own threads (densecrf's native code) are not affected.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _as_tensor(image: np.ndarray):
    """``[H, W, 3]`` uint8 -> ``[1, 3, H, W]`` float 0..1."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0


def network_probs(net, image: np.ndarray, net_size=(240, 180)) -> np.ndarray:
    """``[H, W, K]`` float32 softmax of a network run on the image resized to net_size = (W, H)."""
    import torch

    from .models.deeplab import logits_at_size

    with torch.no_grad(), _one_torch_thread():
        logits = logits_at_size(net, _as_tensor(image), net_size)
        return torch.softmax(logits, 1)[0].permute(1, 2, 0).contiguous().numpy()


def crf_rnn_labels(model, image: np.ndarray) -> np.ndarray:
    """``[H, W]`` labels of a DeepLabCRF on a uint8 image."""
    import torch

    with torch.no_grad(), _one_torch_thread():
        return model(_as_tensor(image), output="crf")[0].argmax(0).numpy()


def _crf_rnn_model(quiet: bool = False):
    """pretrained(crf=True) when its weights are bundled; None with a printed note otherwise."""
    from . import models

    if not os.path.exists(models.CRF_WEIGHTS):
        if not quiet:
            print(f"note: CRF-as-RNN skipped: its weights are not bundled ({os.path.basename(models.CRF_WEIGHTS)})")
        return None
    return models.pretrained(crf=True)


def _params_file():
    from . import models

    return models.CRF_PARAMS


# -- demo --------------------------------------------------------------------------
DEMO_IMAGE = os.path.join(os.path.dirname(__file__), "data", "camvid_0016E5_08093.png")
DEMO_LABELS = os.path.join(os.path.dirname(__file__), "data", "camvid_0016E5_08093_labels.png")
DEMO_FIGSIZE, DEMO_DPI = (10.0, 8.4), 100  # inches, dots per inch: a 1000 x 840 PNG


def _overlay(labels, image, palette):
    """label2rgb with a fixed class -> colour map (it colours the labels present, in sorted order).

    ``image`` is the underlay: RGB (label2rgb greys it) or, cheaper when
    several overlays share it, already grey.
    """
    from skimage.color import label2rgb

    present = np.unique(labels)
    return label2rgb(labels, image=image, colors=[tuple(palette[c] / 255.0) for c in present],
                     alpha=0.75, bg_label=-1, image_alpha=1, kind="overlay", saturation=0)


def _scores(pred, truth, n_classes, ignore):
    from .metrics import SegmentationMetrics

    m = SegmentationMetrics(n_classes, ignore_index=ignore)
    m.update(pred, truth)
    return f"pixel accuracy {100 * m.pixel_accuracy():.1f} %, mean IoU {100 * m.mean_iou():.1f} %"


def cmd_demo(args) -> int:
    import densecrf

    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise CLIError(f"output folder does not exist: {os.path.dirname(args.output)}")
    params = crf_params(args, _params_file())
    timings = {}
    t = time.perf_counter()
    _need("torch")
    from . import models
    from .models import camvid

    net = models.pretrained()
    timings["import torch, load network"] = time.perf_counter() - t

    t = time.perf_counter()
    image = read_image(DEMO_IMAGE, "demo image")
    truth = read_labels(DEMO_LABELS) if os.path.exists(DEMO_LABELS) else None
    timings["read image (skimage)"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = network_probs(net, image, models.NET_SIZE)
    net_labels = probs.argmax(-1)
    timings["network (240 x 180)"] = time.perf_counter() - t

    t = time.perf_counter()
    q = densecrf.refine(image, probs, params=params, threads=args.threads)
    crf_labels = q.argmax(-1)
    timings["dense CRF"] = time.perf_counter() - t

    rnn_labels = None
    if not args.no_crf_rnn:
        t = time.perf_counter()
        model = _crf_rnn_model()
        if model is not None:
            rnn_labels = crf_rnn_labels(model, image)
            timings["CRF-as-RNN"] = time.perf_counter() - t

    t = time.perf_counter()
    _draw_demo(args.output, image, net_labels, crf_labels, rnn_labels, params, camvid)
    timings["figure (matplotlib)"] = time.perf_counter() - t

    h, w = image.shape[:2]
    print(f"densecrf {densecrf.__version__}: CamVid frame {w} x {h}, {len(camvid.CLASSES)} classes; "
          f"dense CRF: {_describe(params)}")
    if truth is not None:
        n, ign = len(camvid.CLASSES), camvid.IGNORE_INDEX
        print(f"  network:             {_scores(net_labels, truth, n, ign)}")
        print(f"  network + dense CRF: {_scores(crf_labels, truth, n, ign)}")
        if rnn_labels is not None:
            print(f"  CRF-as-RNN:          {_scores(rnn_labels, truth, n, ign)}")
    for name, dt in timings.items():
        print(f"  {name:<28s} {dt * 1e3:8.0f} ms")
    print(f"  {'total':<28s} {(time.perf_counter() - args.t_start) * 1e3:8.0f} ms")
    print(f"wrote {args.output}")
    return 0


def _draw_demo(path, image, net_labels, crf_labels, rnn_labels, params, camvid):
    _need("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from skimage.color import rgb2gray

    pal, grey = camvid.PALETTE, rgb2gray(image)
    panels = [(image, "image"), (_overlay(net_labels, grey, pal), "network (DeepLabLite)"),
              (_overlay(crf_labels, grey, pal), f"network + dense CRF ({params.n_iter} iterations)")]
    if rnn_labels is not None:
        panels.append((_overlay(rnn_labels, grey, pal), "CRF-as-RNN (fine-tuned)"))
    fig = Figure(figsize=DEMO_FIGSIZE, dpi=DEMO_DPI)
    axes = fig.subplots(2, 2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.1, wspace=0.03, hspace=0.1)
    for ax, i in zip(axes.ravel(), range(4)):
        ax.set_axis_off()
        if i < len(panels):
            ax.imshow(panels[i][0])
            ax.set_title(panels[i][1], fontsize=11)
        else:
            ax.text(0.5, 0.5, "CRF-as-RNN: weights not bundled\nin this version", ha="center", va="center",
                    fontsize=11, color="0.4", transform=ax.transAxes)
    handles = [Patch(facecolor=pal[i] / 255.0, edgecolor="0.3", label=name) for i, name in enumerate(camvid.CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=10, frameon=False)
    fig.savefig(path, dpi=DEMO_DPI)


# -- refine ------------------------------------------------------------------------
def cmd_refine(args) -> int:
    import densecrf

    many = [os.path.isdir(p) or bool(set("*?[") & set(p)) for p in (args.image, args.probs)]
    if all(many):
        return cmd_refine_dataset(args)  # folders or globs: one <stem>.png per image in -o
    if any(many):
        one, other = ("IMAGE", "PROBS") if many[0] else ("PROBS", "IMAGE")
        raise CLIError(f"{one} is a folder (or glob) but {other} is not: give two folders or globs "
                       "(one <stem>.png per image), or two files")
    for flag in ("workers", "scheduler", "preset", "save_probs", "dry_run"):
        if getattr(args, flag, None) not in (None, False):
            raise CLIError(f"--{flag.replace('_', '-')} is for folders or globs; IMAGE and PROBS are single files "
                           "(-o OUT writes OUT.png and OUT.npy)")
    if args.gt_prob is None:
        args.gt_prob = 0.5
    image = read_image(args.image)
    probs = read_probs(args.probs, image.shape[:2], args)
    params = crf_params(args)
    png, npy = _output_paths(args.output)
    t = time.perf_counter()
    q = densecrf.refine(image, probs, params=params, threads=args.threads)
    dt = time.perf_counter() - t
    labels = q.argmax(-1)
    write_labels(png, labels, _palette(args.palette))
    np.save(npy, q)
    h, w, k = q.shape
    print(f"refined {w} x {h}, K={k}, {_describe(params)} in {dt * 1e3:.0f} ms")
    print(f"wrote {png} (labels) and {npy} (probabilities [H, W, K] float32)")
    return 0


def cmd_refine_dataset(args) -> int:
    """``densecrf refine IMAGES PROBS -o OUT_DIR``: folders or globs matched by stem (densecrf.dataset)."""
    from .dataset import refine_dataset

    if args.executor != "cuda" and (args.device is not None or args.batch_size is not None):
        raise CLIError("--device and --batch-size are for --executor cuda")
    if args.scheduler is not None and args.executor not in ("dask", "ray"):
        raise CLIError("--scheduler is for --executor dask or ray")
    over = {}
    for flag, fld in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            over[fld] = None if value == "none" else value
    if args.params is not None:
        _exists(args.params, "params file")
    summary = refine_dataset(
        args.image, args.probs, args.output, preset=args.preset, params=args.params, executor=args.executor,
        workers=args.workers, scheduler=args.scheduler, threads=args.threads or 1,
        device=args.device or "cuda", batch_size=args.batch_size or 8, save_probs=args.save_probs,
        palette=args.palette, png_level=args.png_level, n_labels=args.n_labels, gt_prob=args.gt_prob,
        unknown=args.unknown, scale_factor=args.scale_factor, resume=args.resume, dry_run=args.dry_run, progress=args.progress, **over)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        for key, action, detail in summary.planned:
            print(f"{action:6s} {key}: {detail}")
        print(summary.line())
        return 0
    for key, path, reason in summary.failed:
        print(f"densecrf refine: failed: {path}: {reason}", file=sys.stderr)
    print(summary.line())
    return 0 if summary.ok else 1


# -- eval --------------------------------------------------------------------------
class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0 = total, enabled, time.perf_counter()

    def update(self, done: int, name: str = "") -> None:
        if not self.enabled:
            return
        width = 30
        fill = int(width * done / max(self.total, 1))
        rate = (time.perf_counter() - self.t0) / max(done, 1)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} "
                         f"{rate:.2f} s/image {name[:24]:<24s}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_eval(args) -> int:
    from .metrics import SegmentationMetrics
    from .models import camvid

    if not os.path.isdir(args.data_dir):
        raise CLIError(f"DATA_DIR not found: {args.data_dir}")
    try:
        pairs = camvid.list_split(args.data_dir, args.split)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    if args.limit < 0:
        raise CLIError(f"--limit must be >= 0, got {args.limit}")
    if args.limit:
        pairs = pairs[:args.limit]
    if not pairs:
        raise CLIError(f"{os.path.join(args.data_dir, args.split)} holds no .png images")
    if args.probs and not os.path.isdir(args.probs):
        raise CLIError(f"--probs folder not found: {args.probs}")
    if args.save_probs:
        if args.probs:
            raise CLIError("--save-probs and --probs exclude each other (the maps would be copied unchanged)")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.save_probs))):
            raise CLIError(f"the folder that should hold --save-probs does not exist: {args.save_probs}")
    params = None if args.no_crf else crf_params(args, _params_file())
    if params is not None and params.info.get("provenance"):
        # fitted parameters: say on what, so that scores on those same frames are read as optimistic
        print(f"note: dense CRF parameters fitted by {params.info['provenance']}")
    n, ignore = len(camvid.CLASSES), camvid.IGNORE_INDEX

    net = model = None
    if not args.probs:
        _need("torch")
        from . import models

        net = models.pretrained()
        if not args.no_crf_rnn:
            model = _crf_rnn_model()
    else:
        print("note: CRF-as-RNN skipped: --probs evaluates another model's maps")
    if args.save_probs:
        os.makedirs(args.save_probs, exist_ok=True)
    rows = {"network": SegmentationMetrics(n, ignore_index=ignore)}
    if params is not None:
        rows["network + dense CRF"] = SegmentationMetrics(n, ignore_index=ignore)
    if model is not None:
        rows["CRF-as-RNN"] = SegmentationMetrics(n, ignore_index=ignore)
    seconds = dict.fromkeys(rows, 0.0)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = _Progress(len(pairs), show)
    try:
        _eval_loop(args, pairs, rows, seconds, net, model, params, bar)
    finally:  # an error then starts on a line of its own
        bar.close()
    _print_table(rows, seconds, len(pairs), camvid.CLASSES, args, params)
    return 0


def _eval_loop(args, pairs, rows, seconds, net, model, params, bar) -> None:
    import densecrf
    from . import models
    from .models import camvid

    n, ignore = len(camvid.CLASSES), camvid.IGNORE_INDEX
    for i, (ip, lp) in enumerate(pairs):
        name = os.path.splitext(os.path.basename(ip))[0]
        image, truth = read_image(ip, "image"), read_labels(lp)
        if image.shape[:2] != truth.shape:
            raise CLIError(f"{ip} is {image.shape[0]} x {image.shape[1]} but its labels are "
                           f"{truth.shape[0]} x {truth.shape[1]}")
        if truth.size and (truth.min() < 0 or truth.max() > ignore):
            raise CLIError(f"{lp} has label {int(truth.max())} outside [0, {n}) and not the ignore index {ignore}")
        t = time.perf_counter()
        if args.probs:
            path = os.path.join(args.probs, name + ".npy")
            _exists(path, f"probability map of {name}")
            probs = read_npy(path, "probabilities")
            if probs.shape != (*truth.shape, n):
                raise CLIError(f"{path} has shape {probs.shape}, expected {(*truth.shape, n)} ([H, W, K] of the "
                               f"image and its {n} classes)")
        else:
            probs = network_probs(net, image, models.NET_SIZE)
            if args.save_probs:
                np.save(os.path.join(args.save_probs, name + ".npy"), probs.astype(args.probs_dtype))
        seconds["network"] += time.perf_counter() - t
        rows["network"].update(probs.argmax(-1), truth)
        if params is not None:
            t = time.perf_counter()
            try:
                q = densecrf.refine(image, probs, params=params, threads=args.threads)
            except ValueError as exc:
                raise CLIError(f"{name}: {str(exc).splitlines()[0]}") from None
            seconds["network + dense CRF"] += time.perf_counter() - t
            rows["network + dense CRF"].update(q.argmax(-1), truth)
        if model is not None:
            t = time.perf_counter()
            rows["CRF-as-RNN"].update(crf_rnn_labels(model, image), truth)
            seconds["CRF-as-RNN"] += time.perf_counter() - t
        bar.update(i + 1, name)


def _print_table(rows, seconds, n_images, classes, args, params) -> None:
    src = args.probs or "bundled DeepLabLite"
    print(f"{args.data_dir} / {args.split}: {n_images} images; network: {src}")
    if params is not None:
        print(f"dense CRF: {_describe(params)}")
    names = list(rows)
    width = max(14, *(len(c) for c in classes))
    cols = [max(10, len(nm)) for nm in names]
    print(f"{'IoU %':<{width}s} " + " ".join(f"{nm:>{c}s}" for nm, c in zip(names, cols)))
    ious = {nm: rows[nm].iou() for nm in names}
    for k, cls in enumerate(classes):
        print(f"{cls:<{width}s} " + " ".join(f"{100 * ious[nm][k]:>{c}.1f}" for nm, c in zip(names, cols)))
    for label, fn in (("mean IoU", "mean_iou"), ("pixel accuracy", "pixel_accuracy"),
                      ("class accuracy", "mean_class_accuracy")):
        print(f"{label:<{width}s} " + " ".join(f"{100 * getattr(rows[nm], fn)():>{c}.1f}" for nm, c in zip(names, cols)))
    print(f"{'s / image':<{width}s} " + " ".join(f"{seconds[nm] / max(n_images, 1):>{c}.3f}" for nm, c in zip(names, cols)))
    if args.save_probs:
        print(f"wrote {n_images} probability maps to {args.save_probs}")


# -- train, bench ----------------------------------------------------------------------
def cmd_train(argv) -> int:
    _need("torch")
    from .models import train

    return int(train.main(argv) or 0)


def cmd_bench(args) -> int:
    from . import bench

    if args.suite is not None:
        return bench.run_suite(args.suite)
    if args.size[0] < 2 or args.size[1] < 2 or args.labels < 2 or args.iters < 1 or args.repeat < 1:
        raise CLIError("--size needs W, H >= 2, --labels >= 2, --iters >= 1 and --repeat >= 1")
    bench.run(width=args.size[0], height=args.size[1], n_labels=args.labels, n_iter=args.iters,
              threads=tuple(args.threads), repeat=args.repeat, compare=not args.no_pydensecrf)
    return 0


# -- parser and entry point --------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="densecrf", description="Fast dense CRFs: demo, refine, eval, train, bench.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="bundled network + dense CRF on a bundled CamVid frame; writes a figure",
                       description="Runs the bundled network, the dense CRF and (when its weights are bundled) "
                                   "the CRF-as-RNN model on a bundled CamVid frame; writes one PNG and prints "
                                   "the timings.")
    d.add_argument("-o", "--output", default="densecrf_demo.png", help="figure to write (densecrf_demo.png)")
    d.add_argument("--no-crf-rnn", action="store_true", help="skip the CRF-as-RNN model")
    _add_crf_flags(d)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("refine", help="refine probabilities or labels along images' edges: one file or folders",
                       description="Refines PROBS ([H, W, K] probabilities in a .npy or .npz, or a label map: "
                                   "PNG or [H, W] integer .npy, with --n-labels and --gt-prob) along IMAGE's "
                                   "edges. Two files: writes OUT.png (labels, palette PNG) and OUT.npy "
                                   "(probabilities). Two folders or globs (images and maps matched by file "
                                   "stem): writes OUT_DIR/<stem>.png per image, resumably, on the chosen "
                                   "executor; prints one line per failed item and a summary, and exits with "
                                   "status 1 when an item failed.")
    r.add_argument("image", help="an image, or a folder or glob of images (IMAGES)")
    r.add_argument("probs",
                   help=".npy/.npz [H, W, K] probabilities or a label PNG / [H, W] integer .npy; or a folder or "
                        "glob of them")
    r.add_argument("-o", "--output", required=True,
                   help="one file: OUT.png and OUT.npy (give either name, or the stem OUT); folders: OUT_DIR")
    r.add_argument("--n-labels", type=int, default=None, help="K, for a label map")
    r.add_argument("--gt-prob", type=float, default=None,
                   help="confidence in a label map's labels, in (0, 1) (0.5, or the preset's; pydensecrf's gt_prob)")
    r.add_argument("--unknown", type=int, default=None, help="label value meaning 'unknown' in a label map")
    r.add_argument("--palette", choices=("voc", "camvid"), default="voc", help="colours of the label PNG (voc)")
    ds = r.add_argument_group("folders and globs (densecrf.dataset; see docs/datasets.md)")
    ds.add_argument("--preset", choices=("psa", "irn", "deeplabv2-voc"), default=None,
                    help="a published pipeline's CRF call (its parameters; the CRF flags override them)")
    ds.add_argument("--scale-factor", type=float, default=1.0,
                    help="divides both spatial bandwidths (psa's scale_factor; 1)")
    ds.add_argument("--executor", choices=("local", "cuda", "dask", "ray"), default="local",
                    help="local: this machine's cores (default); cuda: batches on a GPU; dask, ray: a cluster")
    ds.add_argument("--workers", type=int, default=None,
                    help="processes on this machine (default: one per core), or tasks in flight on dask or ray")
    ds.add_argument("--scheduler", metavar="ADDRESS", default=None,
                    help="a Dask scheduler or Ray cluster address (default: start a local one for the run)")
    ds.add_argument("--device", default=None, help="the cuda executor's device (cuda)")
    ds.add_argument("--batch-size", type=int, default=None, help="the cuda executor's images per batch (8)")
    ds.add_argument("--save-probs", nargs="?", const="float32", choices=("float16", "float32"), default=None,
                    help="also write OUT_DIR/<stem>.npy refined probabilities (float32, or float16)")
    ds.add_argument("--png-level", type=int, default=6, choices=range(10), metavar="0..9",
                    help="zlib level of the written PNGs (6, Pillow's default; 1 writes faster, larger files)")
    ds.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                    help="skip images done by an earlier run with the same inputs and parameters (default)")
    ds.add_argument("--dry-run", action="store_true", help="list what would be done; read and write nothing")
    ds.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar on stderr (default: when it is a terminal)")
    _add_crf_flags(r)
    r.set_defaults(func=cmd_refine)

    e = sub.add_parser("eval", help="metrics of network, network + CRF and CRF-as-RNN on a CamVid-like folder",
                       description="Mean IoU, accuracies and a per-class IoU table of the bundled network (or "
                                   "of --probs maps), of it + the dense CRF, and of the CRF-as-RNN model, on "
                                   "DATA_DIR/SPLIT and DATA_DIR/SPLITannot (CamVid layout, 11 classes).")
    e.add_argument("data_dir", metavar="DATA_DIR")
    e.add_argument("--split", default="val", help="subfolder of images (val); labels in SPLITannot")
    e.add_argument("--probs", metavar="DIR", default=None,
                   help="evaluate these [H, W, 11] .npy maps (named like the images) as the network")
    e.add_argument("--save-probs", metavar="DIR", default=None, help="save the network's softmax maps here")
    e.add_argument("--probs-dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the saved maps (float32)")
    e.add_argument("--limit", type=int, default=0, help="first N images only")
    e.add_argument("--no-crf", action="store_true", help="skip the dense CRF")
    e.add_argument("--no-crf-rnn", action="store_true", help="skip the CRF-as-RNN model")
    e.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when it is a terminal)")
    _add_crf_flags(e)
    e.set_defaults(func=cmd_eval)

    sub.add_parser("train", help="train the network (arguments of python -m densecrf.models.train)",
                   add_help=False)

    b = sub.add_parser("bench", help="time lattice, filter, iteration and refine; compare with pydensecrf",
                       description="Times the reference workload (500 x 375, K = 21, classic parameters, 5 "
                                   "iterations) at 1 and 2 threads, beside pydensecrf when it is installed "
                                   "and agrees; --suite DIR runs the pytest-benchmark suite instead.")
    b.add_argument("--size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
    b.add_argument("--labels", type=int, default=21)
    b.add_argument("--iters", type=int, default=5)
    b.add_argument("--threads", type=int, nargs="+", default=(1, 2))
    b.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median reported)")
    b.add_argument("--no-pydensecrf", action="store_true", help="do not compare with pydensecrf")
    b.add_argument("--suite", metavar="DIR", default=None,
                   help="run `pytest DIR --benchmark-only` (the repository's benchmarks/)")
    b.set_defaults(func=cmd_bench)
    _add_fit_parser(sub)
    return p


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv=None) -> int:
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    try:
        if command == "train":  # train has its own parser: everything after the word goes to it
            try:
                return cmd_train(argv[1:])
            except SystemExit as exc:  # its argparse has printed usage and the error
                return exc.code if isinstance(exc.code, int) else 2
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse has printed usage and the error already
            return int(exc.code or 0) if not isinstance(exc.code, str) else 2
        args.t_start = t_start
        return args.func(args)
    except CLIError as exc:
        print(f"densecrf {command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, EOFError, ImportError) as exc:
        print(f"densecrf {command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"densecrf {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. PIL's DecompressionBombError: still one line, no traceback
        print(f"densecrf {command}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``densecrf`` console script: main(), then a hard exit once the output is flushed.

    Tearing the interpreter down after torch and matplotlib have been
    imported took 1.5 to 2 s of the demo's wall time on the project's 2-core
    machine; there is nothing left to clean up by then (every file written
    is closed), so, as mypy does, the process ends without the teardown.
    ``train`` exits normally (its process group and checkpoints are its own).
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] == ["train"]:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
