"""refine_dataset and iter_refine: a whole dataset through the dense CRF, resumable, on any executor."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass, field

from .. import io
from ..params import CRFParams, as_params
from . import sources
from .executors import make_executor
from .manifest import Manifest
from .presets import get_preset
from .work import ItemResult, Job

__all__ = ["Summary", "iter_refine", "make_job", "refine_dataset"]

_CRF_KEYS = (
    "n_iter",
    "gaussian_sxy",
    "gaussian_compat",
    "bilateral_sxy",
    "bilateral_srgb",
    "bilateral_compat",
    "normalization",
)


@dataclass
class Summary:
    """The outcome of a run: every input is in exactly one of done, skipped and failed.

    Attributes:
        done: keys refined and written by this run.
        skipped: keys finished by an earlier run with the same inputs and parameters.
        failed: ``(key, path, reason)`` of each item that could not be refined.
        planned: with ``dry_run``, ``(key, action, detail)`` per item, action
            ``"refine"``, ``"skip"`` or ``"fail"``.
        seconds: wall time of the run.
        stage_seconds: read, CRF and write time summed over the items done.
        out_dir, executor: where the outputs went and what refined them.
        notes: remarks (maps without an image, say).
    """

    done: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    planned: list = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    out_dir: str | None = None
    executor: str = ""
    notes: list = field(default_factory=list)
    dry_run: bool = False
    inputs: int | None = None

    @property
    def total(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)

    @property
    def ok(self) -> bool:
        """True when no item failed."""
        return not self.failed

    def line(self) -> str:
        """The one-line summary: counts that add up to the input, time and rate."""
        if self.dry_run:
            n = {a: sum(1 for _, act, _ in self.planned if act == a) for a in ("refine", "skip", "fail")}
            return (
                f"dry run: {len(self.planned)} inputs: {n['refine']} to refine, {n['skip']} to skip "
                f"(done earlier), {n['fail']} failing; nothing written"
            )
        rate = len(self.done) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.total} inputs: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed "
            f"in {self.seconds:.2f} s ({rate:.1f} images/s, {self.executor})"
        )

    __str__ = line


def make_job(
    *,
    preset=None,
    params=None,
    scale_factor: float = 1.0,
    n_labels=None,
    gt_prob=None,
    unknown=None,
    clip=None,
    save_probs=None,
    palette="voc",
    png_level=io.PNG_COMPRESS_LEVEL,
    threads: int = 1,
    device: str = "cpu",
    write: bool = True,
    keep_arrays: bool = False,
    return_probs: bool = False,
    **crf,
) -> Job:
    """The :class:`~densecrf.dataset.work.Job` of a run: a preset, then ``params``, then single CRF arguments."""
    unknown_keys = set(crf) - set(_CRF_KEYS)
    if unknown_keys:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown_keys))}")
    fields = {}
    if preset is not None:
        p = get_preset(preset, scale_factor=scale_factor)
        base = p.params
        fields = {
            "maps": "labels" if p.maps == "labels" else "auto",
            "scores": p.scores,
            "clip": p.clip,
            "preset": p.name,
        }
        if p.gt_prob is not None:
            fields["gt_prob"] = p.gt_prob
        if p.unknown is not None:
            fields["unknown"] = p.unknown
    else:
        base = CRFParams()
        if scale_factor != 1.0:
            base = _scaled_params(base, scale_factor)
    if params is not None:
        base = as_params(params)
        if scale_factor != 1.0:
            base = _scaled_params(base, scale_factor)
    over = {k: v for k, v in crf.items() if v is not None}
    if "bilateral_srgb" in over and isinstance(over["bilateral_srgb"], tuple):
        over["bilateral_srgb"] = list(over["bilateral_srgb"])
    if over:
        base = dataclasses.replace(base, **over)
    for name, value in (("n_labels", n_labels), ("gt_prob", gt_prob), ("unknown", unknown), ("clip", clip)):
        if value is not None:
            fields[name] = value
    if fields.get("maps") == "labels" and fields.get("n_labels") is None:
        raise io.InputError(
            f"the {fields['preset']} preset takes label maps: give the number of labels (n_labels / --n-labels K)"
        )
    if save_probs is not None:
        save_probs = {"float16": "float16", "float32": "float32", True: "float32"}.get(
            save_probs if isinstance(save_probs, (str, bool)) else str(save_probs), save_probs
        )
    return Job(
        params=base,
        save_probs=save_probs or None,
        palette=palette,
        png_level=png_level,
        threads=threads,
        device=device,
        write=write,
        keep_arrays=keep_arrays,
        return_probs=return_probs,
        **fields,
    )


def _scaled_params(params: CRFParams, scale_factor: float) -> CRFParams:
    s = float(scale_factor)
    if not s > 0:
        raise ValueError(f"scale_factor must be a positive number, got {scale_factor!r}")
    return dataclasses.replace(params, gaussian_sxy=params.gaussian_sxy / s, bilateral_sxy=params.bilateral_sxy / s)


def _check_out_dir(out_dir: str, plan) -> str:
    """The output folder's real path; refuses one that holds inputs (outputs never overwrite inputs)."""
    real = os.path.realpath(out_dir)
    if os.path.exists(real) and not os.path.isdir(real):
        raise io.InputError(f"output folder {out_dir} is a file")
    if real in plan.input_dirs:
        raise io.InputError(
            f"output folder {out_dir} holds input files: choose another folder (outputs never overwrite inputs)"
        )
    return real


_PART = re.compile(r"^\..+\.part$")


def _clean_parts(out_dir: str) -> None:
    """Removes temporary files that a killed run left (``.NAME.XXXX.part``, never an output)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(out_dir):
            if _PART.match(name):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(out_dir, name))


def _progress_bar(total, enabled):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the cli extra brings it; without it, the summary line only
        return None
    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _stream(
    images,
    probs,
    out_dir,
    job: Job,
    *,
    executor,
    workers,
    scheduler,
    threads,
    device,
    batch_size,
    resume,
    dry_run,
    summary: Summary,
):
    """Yields every item's :class:`ItemResult` as it finishes (skipped and failed ones included)."""
    plan = sources.plan(images, probs, out_dir, save_npy=job.save_probs is not None)
    summary.notes.extend(plan.notes)
    summary.inputs = plan.total
    manifest = None
    job_key = job.key()
    if out_dir is not None:
        out_dir = _check_out_dir(os.fspath(out_dir), plan)
        summary.out_dir = out_dir
        if os.path.isdir(out_dir):
            manifest = Manifest(out_dir)
    ex = make_executor(
        executor, workers=workers, scheduler=scheduler, threads=threads, device=device, batch_size=batch_size
    )
    if dry_run:
        for task, problem in plan.tasks:
            if problem is not None:
                summary.planned.append((task.key, "fail", f"{task.image}: {problem}"))
            elif manifest is not None and resume and manifest.is_done(task.key, sources.identity(task), job_key):
                summary.planned.append((task.key, "skip", task.png))
            else:
                summary.planned.append((task.key, "refine", f"{task.image} + {task.probs} -> {task.png}"))
        return
    if hasattr(ex, "check"):
        ex.check()  # e.g. no GPU: say so before the output folder is made
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        _clean_parts(out_dir)
        if manifest is None:
            manifest = Manifest(out_dir)
        manifest.open()  # with resume=False every item is redone; the records are still kept
    identities: dict = {}
    immediate: list = []  # skipped and failed-at-planning results, handed out between executor results

    def todo():
        for task, problem in plan.tasks:
            if problem is not None:
                immediate.append(ItemResult(task.index, task.key, "failed", task.image, problem))
                continue
            if manifest is not None:
                try:
                    ident = sources.identity(task)
                except OSError as exc:
                    immediate.append(
                        ItemResult(task.index, task.key, "failed", task.image, f"cannot read: {exc.strerror or exc}")
                    )
                    continue
                if resume and manifest.is_done(task.key, ident, job_key):
                    immediate.append(ItemResult(task.index, task.key, "skipped", outputs={}))
                    continue
                identities[task.index] = ident
            yield task

    try:
        with ex:
            summary.executor = ex.describe()
            for res in ex.run(todo(), job):
                while immediate:
                    yield immediate.pop(0)
                if res.status == "done" and manifest is not None and res.outputs:
                    manifest.add(res.key, identities.pop(res.index), job_key, res.outputs)
                yield res
            while immediate:
                yield immediate.pop(0)
    finally:
        if manifest is not None and manifest._fd is not None:
            manifest.close()


def refine_dataset(
    images,
    probs=None,
    out_dir=None,
    *,
    preset=None,
    params=None,
    executor="local",
    workers=None,
    scheduler=None,
    threads: int = 1,
    device: str = "cuda",
    batch_size: int = 8,
    save_probs=None,
    palette="voc",
    png_level: int = io.PNG_COMPRESS_LEVEL,
    n_labels=None,
    gt_prob=None,
    unknown=None,
    clip=None,
    scale_factor: float = 1.0,
    resume: bool = True,
    dry_run: bool = False,
    progress=None,
    **crf,
) -> Summary:
    """Refines every item of a dataset and writes one ``<stem>.png`` of labels per item into ``out_dir``.

    Args:
        images, probs: the inputs (see :mod:`densecrf.dataset.sources`): two
            folders or globs matched by file stem, two lists of paths matched
            by position, or ``images`` alone as a list of ``(image, map)`` path
            pairs or an iterable / map-style dataset of ``(image, probs[, key])``
            arrays. Maps are ``[H, W, K]`` probabilities (``.npy``, or ``.npz``
            holding ``prob``, ``probs`` or one array; float16 or float32) or
            label maps (a PNG or an ``[H, W]`` integer array) with ``n_labels``.
        out_dir: the output folder (created; it must hold no input).
        preset: ``"psa"``, ``"irn"``, ``"deeplabv2-voc"`` (see
            :mod:`densecrf.dataset.presets`) or None for :func:`densecrf.refine`'s defaults.
        params: a :class:`densecrf.params.CRFParams`, dict or JSON path (what
            ``densecrf.fit`` writes); replaces the preset's terms.
        executor: ``"local"``, ``"cuda"``, ``"dask"`` or ``"ray"`` (see
            :mod:`densecrf.dataset.executors`).
        workers: processes on this machine (local: default one per core; cuda:
            reader processes), or tasks in flight on Dask or Ray.
        scheduler: Dask scheduler address (or a ``distributed.Client``) or Ray
            cluster address; None starts a local cluster for the run.
        threads: native threads per item (local, dask, ray).
        device, batch_size: the cuda executor's device and images per batch.
        save_probs: None, ``"float16"`` or ``"float32"``: also write the
            refined probabilities as ``<stem>.npy``.
        palette: ``"voc"``, ``"camvid"`` or an ``[n, 3]`` uint8 table for the PNGs.
        png_level: zlib level of the PNGs (6, Pillow's default).
        n_labels, gt_prob, unknown: label maps as pydensecrf's
            ``unary_from_labels`` (``unknown``: the "unsure" label value).
        clip: lower bound of the probabilities before the logarithm (1e-5).
        scale_factor: divides both spatial bandwidths (psa's ``scale_factor``).
        resume: skip items that the folder's manifest records as done from
            the same inputs and parameters (see :mod:`densecrf.dataset.manifest`).
        dry_run: plan only: :attr:`Summary.planned` says what would be done;
            nothing is read beyond file sizes and times, nothing written.
        progress: a progress bar on stderr (default: when stderr is a terminal).
        **crf: :func:`densecrf.refine`'s ``n_iter``, ``gaussian_sxy``,
            ``gaussian_compat``, ``bilateral_sxy``, ``bilateral_srgb``,
            ``bilateral_compat``, ``normalization``: override the preset.

    Returns:
        A :class:`Summary`; a bad item is reported in ``failed`` with its
        path and reason while all others are written. Raises
        :class:`densecrf.io.InputError` (a ValueError) before any work for a
        bad argument, no input, or an output folder holding inputs.
    """
    if out_dir is None:
        raise io.InputError("give an output folder (out_dir)")
    job = make_job(
        preset=preset,
        params=params,
        scale_factor=scale_factor,
        n_labels=n_labels,
        gt_prob=gt_prob,
        unknown=unknown,
        clip=clip,
        save_probs=save_probs,
        palette=palette,
        png_level=png_level,
        threads=threads,
        device="cpu" if executor != "cuda" else device,
        **crf,
    )
    summary = Summary(dry_run=dry_run)
    t0 = time.perf_counter()
    stages = {"read": 0.0, "crf": 0.0, "write": 0.0}
    results = _stream(
        images,
        probs,
        out_dir,
        job,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        device=device,
        batch_size=batch_size,
        resume=resume,
        dry_run=dry_run,
        summary=summary,
    )
    bar = None
    order: dict = {}
    try:
        for res in results:
            order[res.key] = res.index
            if res.status == "done":
                summary.done.append(res.key)
                for k, v in res.seconds.items():
                    stages[k] = stages.get(k, 0.0) + v
            elif res.status == "skipped":
                summary.skipped.append(res.key)
            else:
                summary.failed.append((res.key, res.path, res.reason))
            if bar is None and not dry_run:
                bar = _progress_bar(summary.inputs, progress) or False
            if bar:
                bar.update(1)
    finally:
        if bar:
            bar.close()
    summary.seconds = time.perf_counter() - t0
    summary.stage_seconds = stages
    for name in ("done", "skipped", "failed"):  # input order, whatever order the items finished in
        items = getattr(summary, name)
        items.sort(key=lambda x: order[x if isinstance(x, str) else x[0]])
    return summary


def iter_refine(
    images,
    probs=None,
    out_dir=None,
    *,
    return_probs: bool = False,
    preset=None,
    params=None,
    executor="local",
    workers=None,
    scheduler=None,
    threads: int = 1,
    device: str = "cuda",
    batch_size: int = 8,
    save_probs=None,
    palette="voc",
    png_level: int = io.PNG_COMPRESS_LEVEL,
    n_labels=None,
    gt_prob=None,
    unknown=None,
    clip=None,
    scale_factor: float = 1.0,
    resume: bool = True,
    **crf,
):
    """:func:`refine_dataset` as a generator of :class:`~densecrf.dataset.work.ItemResult`, in input order.

    Each result carries ``labels`` (``[H, W]``) and, with ``return_probs``,
    ``probs`` (``[H, W, K]`` float32). Without ``out_dir`` nothing is
    written; with it, outputs and the manifest are written as by
    :func:`refine_dataset` and items done by an earlier run come back as
    ``status == "skipped"`` without arrays (``resume=False`` recomputes
    them). Failed items come back with ``status == "failed"``, ``path`` and
    ``reason``; nothing is raised for them. Results are yielded in input
    order; at most a few items per worker are held while an earlier one is
    still being refined.
    """
    job = make_job(
        preset=preset,
        params=params,
        scale_factor=scale_factor,
        n_labels=n_labels,
        gt_prob=gt_prob,
        unknown=unknown,
        clip=clip,
        save_probs=save_probs,
        palette=palette,
        png_level=png_level,
        threads=threads,
        device="cpu" if executor != "cuda" else device,
        write=out_dir is not None,
        keep_arrays=True,
        return_probs=return_probs,
        **crf,
    )
    summary = Summary()
    results = _stream(
        images,
        probs,
        out_dir,
        job,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
        device=device,
        batch_size=batch_size,
        resume=resume,
        dry_run=False,
        summary=summary,
    )
    held: dict = {}
    nxt = 0
    for res in results:
        held[res.index] = res
        while nxt in held:
            yield held.pop(nxt)
            nxt += 1
    for i in sorted(held):  # only if indices had gaps (they do not): never lose a result
        yield held.pop(i)
