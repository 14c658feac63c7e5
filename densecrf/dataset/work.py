"""One item of a dataset run: read, refine, write, on whichever worker runs it.

Every executor (a local process, a Dask or Ray worker, the CUDA executor's
readers) calls the functions of this module, so every executor reads,
refines and writes an item with the same code and the same bits. A
:class:`Job` holds everything but the item (parameters and output options):
it is sent to each worker once. A :class:`Task` is one item: where its
image and map come from and where its outputs go.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import io
from .._version import __version__
from ..params import CRFParams

__all__ = ["ItemResult", "Job", "Task", "process", "read_item", "refine_items", "write_item"]

# The clip used for maps renormalised from scores: far below any renormalised
# value (>= clip / K), so it never binds, and a normal float32.
_TINY = 1e-37


@dataclass(frozen=True)
class Job:
    """What a run does to every item (sent to each worker once).

    Attributes:
        params: the CRF's terms and iterations.
        maps: ``"auto"`` (``.npy``/``.npz`` probabilities, or label maps: a PNG or an
            integer array, with ``n_labels`` and ``gt_prob``) or ``"labels"`` (label maps only).
        scores: probability maps may be scores in [0, 1] that do not sum to one
            (pydensecrf's ``unary_from_softmax`` semantics, see :mod:`.presets`).
        clip: lower bound of the probabilities before the logarithm.
        n_labels, gt_prob, unknown: how label maps become probabilities (as
            pydensecrf's ``unary_from_labels``).
        save_probs: None, ``"float16"`` or ``"float32"``: also write ``<key>.npy``.
        palette: ``"voc"``, ``"camvid"`` or an ``[n, 3]`` uint8 colour table for the PNGs.
        png_level: zlib level of the written PNGs (Pillow's default, 6).
        threads: native threads per item on the CPU.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        write: write the outputs (False: the generator form without an output folder).
        keep_arrays: return the labels (and probabilities when ``save_probs`` or
            ``return_probs``) to the caller.
        return_probs: return the refined probabilities.
    """

    params: CRFParams = field(default_factory=CRFParams)
    maps: str = "auto"
    scores: bool = False
    clip: float = 1e-5
    n_labels: int | None = None
    gt_prob: float = 0.5
    unknown: int | None = None
    save_probs: str | None = None
    palette: object = "voc"
    png_level: int = io.PNG_COMPRESS_LEVEL
    threads: int = 1
    device: str = "cpu"
    write: bool = True
    keep_arrays: bool = False
    return_probs: bool = False
    preset: str | None = None

    def __post_init__(self):
        if self.maps not in ("auto", "labels"):
            raise ValueError(f"maps must be 'auto' or 'labels', got {self.maps!r}")
        if self.save_probs not in (None, "float16", "float32"):
            raise ValueError(f"save_probs must be None, 'float16' or 'float32', got {self.save_probs!r}")
        if not isinstance(self.png_level, int) or not 0 <= self.png_level <= 9:
            raise ValueError(f"png_level must be an integer in 0..9, got {self.png_level!r}")
        if not 0 < float(self.clip) <= 1:
            raise ValueError(f"clip must be in (0, 1], got {self.clip!r}")
        if self.n_labels is not None and (isinstance(self.n_labels, bool) or int(self.n_labels) < 2):
            raise ValueError(f"n_labels must be an integer >= 2, got {self.n_labels!r}")
        if not 0 < float(self.gt_prob) < 1:
            raise ValueError(f"gt_prob must be in (0, 1), got {self.gt_prob!r}")
        if isinstance(self.palette, str):
            _palette(self.palette)  # raises on an unknown name

    def refine_kwargs(self) -> dict:
        kw = self.params.refine_kwargs()
        kw["clip"] = float(self.clip)
        return kw

    def identity(self) -> dict:
        """What the outputs depend on (the manifest's parameter key): not the executor or worker count."""
        pal = self.palette if isinstance(self.palette, str) else np.asarray(self.palette).tolist()
        params = self.params.to_dict()
        params.pop("info", None)
        return {
            "params": params,
            "maps": self.maps,
            "scores": self.scores,
            "clip": float(self.clip),
            "n_labels": self.n_labels,
            "gt_prob": float(self.gt_prob),
            "unknown": self.unknown,
            "save_probs": self.save_probs,
            "palette": pal,
            "png_level": self.png_level,
            "backend": "cpu" if self.device == "cpu" else "cuda",
            "densecrf": __version__,
        }

    def key(self) -> str:
        """A digest of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def palette_array(self) -> np.ndarray:
        return _palette(self.palette) if isinstance(self.palette, str) else np.asarray(self.palette, np.uint8)


@dataclass
class Task:
    """One item: its position, output stem, image and map (paths or arrays) and output paths."""

    index: int
    key: str
    image: object
    probs: object
    png: str | None = None
    npy: str | None = None

    def input_paths(self) -> list[str]:
        return [p for p in (self.image, self.probs) if isinstance(p, str)]


@dataclass
class ItemResult:
    """What became of one item.

    Attributes:
        index: its position in the input.
        key: its output stem.
        status: ``"done"``, ``"skipped"`` (done by an earlier run, unchanged) or ``"failed"``.
        path: for a failure, the file at fault (or the key for in-memory inputs).
        reason: for a failure, what is wrong, in one line.
        outputs: ``{"png": (path, size), "npy": (path, size)}`` of what was written.
        labels: ``[H, W]`` refined labels when the caller asked for arrays.
        probs: ``[H, W, K]`` float32 refined probabilities when asked for.
        seconds: ``{"read": s, "crf": s, "write": s}`` spent on this item.
    """

    index: int
    key: str
    status: str
    path: str | None = None
    reason: str | None = None
    outputs: dict = field(default_factory=dict)
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class ItemError(Exception):
    """An item that cannot be refined: the file (or key) at fault and why."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _where(src, key: str) -> str:
    return src if isinstance(src, str) else f"item {key}"


# -- reading -----------------------------------------------------------------------
def read_item(task: Task, job: Job) -> tuple[np.ndarray, np.ndarray]:
    """``(image [H, W, 3] uint8, probs [H, W, K] floating)`` of a task; ItemError on bad input."""
    try:
        if isinstance(task.image, str):
            image = io.read_image(task.image)
        else:
            image = _image_array(task.image, task.key)
    except io.InputError as exc:
        raise ItemError(_where(task.image, task.key), _first_line(exc)) from None
    hw = image.shape[:2]
    try:
        if isinstance(task.probs, str):
            if job.maps == "labels":
                probs = _labels_file(task.probs, hw, job)
            else:
                probs = io.read_probs(task.probs, hw, n_labels=job.n_labels, gt_prob=job.gt_prob, unknown=job.unknown)
        else:
            probs = _probs_array(task.probs, hw, job, task.key)
    except io.InputError as exc:
        raise ItemError(_where(task.probs, task.key), _first_line(exc)) from None
    return image, probs


def _image_array(a, key: str) -> np.ndarray:
    img = np.asarray(a)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[-1] not in (1, 3) or min(img.shape[:2]) < 1:
        raise io.InputError(f"image of item {key} must be [H, W, 3] (or [H, W]), got shape {img.shape}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _labels_file(path: str, hw, job: Job) -> np.ndarray:
    if path.lower().endswith(io.PROB_EXTS):
        arr = io.read_npy(path, "label map")
        if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise io.InputError(
                f"label map {path} must be an [H, W] integer array (this preset takes label maps), "
                f"got {arr.dtype} of shape {arr.shape}"
            )
        labels = arr.astype(np.int64)
    else:
        labels = io.read_labels(path, "label map")
    if labels.shape != tuple(hw):
        raise io.InputError(
            f"label map {path} is {labels.shape[0]} x {labels.shape[1]} but the image is {hw[0]} x {hw[1]} (H x W)"
        )
    return io.labels_to_probs(labels, job.n_labels, job.gt_prob, job.unknown, f"label map {path}")


def _probs_array(a, hw, job: Job, key: str) -> np.ndarray:
    arr = np.asarray(a)
    what = f"map of item {key}"
    if arr.ndim == 2 and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        if arr.shape != tuple(hw):
            raise io.InputError(f"{what} is {arr.shape[0]} x {arr.shape[1]} but the image is {hw[0]} x {hw[1]}")
        return io.labels_to_probs(arr.astype(np.int64), job.n_labels, job.gt_prob, job.unknown, what)
    if job.maps == "labels":
        raise io.InputError(
            f"{what} must be an [H, W] integer label map (this preset takes label maps), "
            f"got {arr.dtype} of shape {arr.shape}"
        )
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise io.InputError(
            f"{what} must be [H, W, K] floating-point probabilities or [H, W] integer labels, "
            f"got {arr.dtype} of shape {arr.shape}"
        )
    if arr.shape[:2] != tuple(hw):
        raise io.InputError(f"{what} has shape {arr.shape} but the image is {hw[0]} x {hw[1]} (H x W)")
    return arr


# -- refining ----------------------------------------------------------------------
def as_distribution(probs: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """Scores in [0, 1] as a probability map with the same mean field, and the clip to use with it.

    Maps that are probabilities already (in [0, 1], summing to one within
    1e-2, as :func:`densecrf.refine` accepts) come back as they are. Others
    become ``clip(p, clip, 1) / sum_k clip(p, clip, 1)``: ``-log`` of it is
    pydensecrf's ``-log(clip(p, clip, 1))`` plus a constant per pixel, which
    mean field does not see; ``_TINY`` then keeps refine's clip from binding.
    """
    p = np.asarray(probs, dtype=np.float32)
    if not np.isfinite(p).all():
        return p, clip  # refine reports the first non-finite value and where it is
    sums = p.sum(axis=-1, dtype=np.float64)
    # 1e-2 and 1e-3: refine's own tolerances (float16 softmax, float32 rounding).
    if p.size and p.min() >= 0 and p.max() <= 1 + 1e-3 and np.abs(sums - 1).max() <= 1e-2:
        return p, clip
    q = np.clip(p, np.float32(clip), np.float32(1))
    q /= q.sum(axis=-1, keepdims=True)
    return q, _TINY


def _is_distribution_error(exc: ValueError) -> bool:
    msg = str(exc)
    return msg.startswith(("probs must sum to one", "probs must lie in [0, 1]"))


def refine_items(images: list, probs: list, job: Job) -> list[np.ndarray]:
    """Refined probabilities ``[H, W, K]`` float32 of each (image, map) pair, as the job says.

    The one place where a dataset run calls the library: ``densecrf.refine``
    per image on the CPU (``job.threads`` native threads), or one
    ``densecrf.cuda.refine_batch`` call for the whole list on a GPU (the
    CUDA executor gives it same-size images).
    """
    kw = job.refine_kwargs()
    if job.device == "cpu":
        from ..crf import refine

        out = []
        for im, p in zip(images, probs, strict=True):
            try:
                out.append(refine(im, p, threads=job.threads, **kw))
            except ValueError as exc:
                if not (job.scores and _is_distribution_error(exc)):
                    raise
                q, clip = as_distribution(p, job.clip)
                out.append(refine(im, q, threads=job.threads, **{**kw, "clip": clip}))
        return out
    from .. import cuda

    if job.scores:  # a batch is one call: renormalise before it, not after a failure
        pairs = [as_distribution(p, job.clip) for p in probs]
        clips = {c for _, c in pairs}
        probs = [q for q, _ in pairs]
        if len(clips) > 1:  # a mixed batch: split it so that each part has one clip
            keep = [c == job.clip for _, c in pairs]
            a = refine_items(
                [i for i, k in zip(images, keep, strict=True) if k],
                [p for p, k in zip(probs, keep, strict=True) if k],
                dataclasses.replace(job, scores=False),
            )
            b = refine_items(
                [i for i, k in zip(images, keep, strict=True) if not k],
                [p for p, k in zip(probs, keep, strict=True) if not k],
                dataclasses.replace(job, scores=False, clip=_TINY),
            )
            ia, ib = iter(a), iter(b)
            return [next(ia) if k else next(ib) for k in keep]
        kw["clip"] = clips.pop()
    return cuda.refine_batch(
        list(images), [np.asarray(p, np.float32) for p in probs], channels_first=False, device=job.device, **kw
    )


# -- writing -----------------------------------------------------------------------
def labels_of(q: np.ndarray) -> np.ndarray:
    """``[H, W]`` arg-max labels (uint8 up to 256 labels), numpy's argmax over the last axis.

    C-contiguous float32 maps of up to 65536 labels take the native loop
    (``_C.argmax_labels``: the same labels, ties to the first, NaN first; a
    few times faster than numpy's argmax over a short last axis).
    """
    k = q.shape[-1]
    if q.dtype == np.float32 and q.flags.c_contiguous and 1 <= k <= 65536 and q.size:
        from .._native import _C

        return _C.argmax_labels(q.reshape(-1, k)).reshape(q.shape[:-1])
    lab = q.argmax(axis=-1)
    return lab.astype(np.uint8 if k <= 256 else np.uint16)


def write_item(task: Task, labels: np.ndarray, q: np.ndarray | None, job: Job) -> dict:
    """Writes the task's PNG (and ``.npy``), each atomically; returns ``{"png": (path, size), ...}``."""
    outputs = {}
    io.write_labels(task.png, labels, job.palette_array(), compress_level=job.png_level)
    outputs["png"] = (task.png, os.path.getsize(task.png))
    if job.save_probs is not None and q is not None:
        io.write_probs(task.npy, q, np.dtype(job.save_probs))
        outputs["npy"] = (task.npy, os.path.getsize(task.npy))
    return outputs


def finish(task: Task, q: np.ndarray, job: Job, seconds: dict) -> ItemResult:
    """Labels and outputs of a refined item (the write half of :func:`process`)."""
    t0 = time.perf_counter()
    labels = labels_of(q)
    try:
        outputs = write_item(task, labels, q, job) if job.write else {}
    except (OSError, ValueError) as exc:
        return ItemResult(
            task.index, task.key, "failed", task.png, f"could not write: {_first_line(exc)}", seconds=seconds
        )
    seconds["write"] = time.perf_counter() - t0
    res = ItemResult(task.index, task.key, "done", outputs=outputs, seconds=seconds)
    if job.keep_arrays:
        res.labels = labels
        if job.return_probs:
            res.probs = q
    return res


def failed(task: Task, exc: BaseException) -> ItemResult:
    if isinstance(exc, ItemError):
        return ItemResult(task.index, task.key, "failed", exc.path, exc.reason)
    where = _where(task.probs, task.key)
    if isinstance(exc, (ValueError, TypeError)):  # the library's checks: NaN, sums, sizes
        return ItemResult(task.index, task.key, "failed", where, _first_line(exc))
    if isinstance(exc, MemoryError):
        return ItemResult(task.index, task.key, "failed", where, "out of memory")
    return ItemResult(task.index, task.key, "failed", where, f"{type(exc).__name__}: {_first_line(exc)}")


def load(task: Task, job: Job):
    """``(image, probs, seconds)`` of a task, or the failed :class:`ItemResult` saying why not."""
    t0 = time.perf_counter()
    try:
        image, probs = read_item(task, job)
    except Exception as exc:
        return failed(task, exc)
    return image, probs, {"read": time.perf_counter() - t0}


def refine_and_write(task: Task, image: np.ndarray, probs: np.ndarray, seconds: dict, job: Job) -> ItemResult:
    """The CRF and the outputs of a loaded item."""
    t0 = time.perf_counter()
    try:
        (q,) = refine_items([image], [probs], job)
    except Exception as exc:
        return failed(task, exc)
    seconds["crf"] = time.perf_counter() - t0
    return finish(task, q, job, seconds)


def process(task: Task, job: Job) -> ItemResult:
    """Reads, refines and writes one item; never raises for a bad item (the result says why)."""
    loaded = load(task, job)
    if isinstance(loaded, ItemResult):
        return loaded
    return refine_and_write(task, *loaded, job)


def _palette(name: str) -> np.ndarray:
    """A named colour table: "camvid" (the bundled network's classes) or what :func:`densecrf.io.palette` knows."""
    if name == "camvid":
        from ..models.camvid import PALETTE

        return PALETTE
    return io.palette(name)
