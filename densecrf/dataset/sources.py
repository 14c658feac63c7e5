"""Where a dataset run's items come from: folders, globs, path lists, or any iterable of arrays.

* two folders (or two globs): images and maps matched by file stem; every
  image is one item, an image without a map (or with two) is a failed item;
* two equal-length lists of paths: matched by position;
* one list of ``(image_path, map_path)`` pairs;
* any iterable, or a map-style dataset (``__len__`` and ``__getitem__``, such
  as a ``torch.utils.data.Dataset``), yielding ``(image, probs)`` or
  ``(image, probs, key)`` with arrays ``[H, W, 3]`` and ``[H, W, K]`` (or an
  ``[H, W]`` integer label map); tensors are turned into numpy arrays with
  ``numpy.asarray`` (CPU tensors), torch is never imported here.

A plan is an iterator of :class:`~densecrf.dataset.work.Task` with the
total when it is known, and the files it reads (so that the run can refuse
an output folder that would overwrite one).
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .. import io
from .work import Task

__all__ = ["Plan", "identity", "plan"]

_GLOB_CHARS = set("*?[")
MAP_EXTS = io.PROB_EXTS + (".png",)


@dataclass
class Plan:
    """The items of a run and what they read.

    ``tasks`` yields ``(task, problem)`` in input order, ``problem`` None or
    why the item cannot be refined (an image without a map, say); ``total``
    is None when the source has no length.
    """

    tasks: Iterator
    total: int | None
    input_files: list = field(default_factory=list)
    input_dirs: set = field(default_factory=set)
    notes: list = field(default_factory=list)


def _is_pathlike(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _list_files(spec, exts, what: str) -> list[str]:
    """The files of a folder (with the given endings) or of a glob, sorted; one file alone."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.lower().endswith(exts) and not n.startswith("."))
        return [os.path.join(spec, n) for n in names if os.path.isfile(os.path.join(spec, n))]
    if _GLOB_CHARS & set(spec):
        files = sorted(f for f in _glob.glob(spec) if os.path.isfile(f))
        if not files:
            raise io.InputError(f"{what}: no file matches {spec}")
        return files
    if os.path.isfile(spec):
        return [spec]
    raise io.InputError(f"{what} not found: {spec} (a folder, a glob or a file)")


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _by_stem(files: list[str], what: str) -> dict:
    out: dict = {}
    for f in files:
        out.setdefault(_stem(f), []).append(f)
    return out


def plan(images, probs=None, out_dir=None, *, save_npy: bool = False) -> Plan:
    """The tasks of a run over ``images`` and ``probs`` (see the module's docstring)."""
    if probs is None:
        if _is_pathlike(images):
            raise io.InputError("give the probability maps too: refine_dataset(images, probs, out_dir)")
        if (
            isinstance(images, (list, tuple))
            and images
            and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_pathlike(x) for x in p) for p in images)
        ):
            return _path_plan([(os.fspath(a), os.fspath(b), None) for a, b in images], out_dir, save_npy)
        return _iterable_plan(images, out_dir, save_npy)
    if _is_pathlike(images) != _is_pathlike(probs):
        raise io.InputError("images and probs must both be folders/globs/files, or both lists of paths")
    if _is_pathlike(images):
        img_files = _list_files(images, io.IMAGE_EXTS, "images")
        map_files = _list_files(probs, MAP_EXTS, "probability maps")
        if not img_files:
            raise io.InputError(f"images: no image file ({', '.join(io.IMAGE_EXTS)}) in {os.fspath(images)}")
        maps = _by_stem(map_files, "maps")
        entries = []
        for f in img_files:
            found = maps.get(_stem(f), [])
            if len(found) == 1:
                entries.append((f, found[0], None))
            elif not found:
                entries.append((f, None, f"no probability map named {_stem(f)}.* in {os.fspath(probs)}"))
            else:
                entries.append((f, None, f"more than one map for this image: {', '.join(found)}"))
        p = _path_plan(entries, out_dir, save_npy)
        stems = {_stem(f) for f in img_files}
        extra = sum(1 for s in maps if s not in stems)
        if extra:
            p.notes.append(f"{extra} map(s) without an image were not used")
        return p
    images, probs = [os.fspath(x) for x in images], [os.fspath(x) for x in probs]
    if len(images) != len(probs):
        raise io.InputError(f"got {len(images)} images and {len(probs)} maps: two lists are matched by position")
    return _path_plan([(a, b, None) for a, b in zip(images, probs, strict=True)], out_dir, save_npy)


def _outputs(out_dir, key, save_npy):
    if out_dir is None:
        return None, None
    return os.path.join(out_dir, key + ".png"), (os.path.join(out_dir, key + ".npy") if save_npy else None)


def _path_plan(entries, out_dir, save_npy) -> Plan:
    """entries: ``(image, map or None, problem or None)`` in input order."""
    seen: dict = {}
    for img, _, _ in entries:
        key = _stem(img)
        if key in seen:
            raise io.InputError(f"two images would write the same output {key}.png: {seen[key]} and {img}")
        seen[key] = img
    files = [f for img, m, _ in entries for f in (img, m) if f is not None]
    # The folder a path names and the folder of the file it leads to (through links).
    dirs = {os.path.dirname(os.path.realpath(f)) for f in files} | {
        os.path.realpath(os.path.dirname(os.path.abspath(f))) for f in files
    }

    def tasks():
        for i, (img, m, problem) in enumerate(entries):
            key = _stem(img)
            png, npy = _outputs(out_dir, key, save_npy)
            yield Task(i, key, img, m, png, npy), problem

    return Plan(tasks(), len(entries), files, dirs)


def _iterable_plan(source, out_dir, save_npy) -> Plan:
    if isinstance(source, (str, bytes, dict)) or not (hasattr(source, "__iter__") or hasattr(source, "__getitem__")):
        raise io.InputError(
            f"images must be a folder, a glob, a list of paths or an iterable of (image, probs), "
            f"got {type(source).__name__}"
        )
    total = None
    if hasattr(source, "__len__") and hasattr(source, "__getitem__") and not isinstance(source, (list, tuple)):
        total = len(source)
        it = (source[i] for i in range(total))
    else:
        if hasattr(source, "__len__"):
            total = len(source)
        it = iter(source)

    def tasks():
        keys = set()
        for i, item in enumerate(it):
            if not isinstance(item, (list, tuple)) or len(item) not in (2, 3):
                yield (
                    Task(i, f"{i:06d}", None, None, None, None),
                    (f"an item must be (image, probs) or (image, probs, key), got {type(item).__name__}"),
                )
                continue
            key = str(item[2]) if len(item) == 3 else f"{i:06d}"
            png, npy = _outputs(out_dir, key, save_npy)
            task = Task(i, key, _array(item[0]), _array(item[1]), png, npy)
            if key in keys:
                yield task, f"key {key!r} appears twice: its output would overwrite the first one's"
                continue
            if os.sep in key or (os.altsep and os.altsep in key) or key in ("", ".", ".."):
                yield task, f"key {key!r} is not a file name"
                continue
            keys.add(key)
            yield task, None

    return Plan(tasks(), total)


def _array(x):
    if _is_pathlike(x):
        return os.fspath(x)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
    return np.asarray(x)


def identity(task: Task) -> list:
    """What a task's inputs are, for the manifest: ``[path, size, mtime_ns]`` per file, a digest per array."""
    out = []
    for src in (task.image, task.probs):
        if isinstance(src, str):
            st = os.stat(src)
            out.append([os.path.abspath(src), st.st_size, st.st_mtime_ns])
        else:
            a = np.ascontiguousarray(src)
            h = hashlib.blake2b(digest_size=16)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data if a.size else b"")
            out.append(["array", h.hexdigest()])
    return out
