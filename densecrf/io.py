"""Images, label maps and probability maps in and out, with one set of error messages.

Every reader raises :class:`InputError` (a ``ValueError``) naming the file
and what is wrong with it: missing, a folder, not decodable, the wrong shape
or dtype. Writers are atomic: the data goes to a temporary file in the
target's folder, which is then renamed onto the target (``os.replace``), so
a killed process leaves either the old file or the new one, never half of
either. The command line, :mod:`densecrf.fit` and the dataset pipeline all
read and write through this module.

Image decoding uses Pillow (a dependency of scikit-image, the ``cli``
extra); 8-bit RGB and grey files are read by Pillow alone, other modes
(RGBA, 16-bit) converted as scikit-image does.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import warnings

import numpy as np

__all__ = [
    "IMAGE_EXTS",
    "PROB_EXTS",
    "InputError",
    "atomic_path",
    "labels_to_probs",
    "palette",
    "read_image",
    "read_labels",
    "read_npy",
    "read_probs",
    "voc_palette",
    "write_labels",
    "write_probs",
]

#: File endings read as probability maps (label maps may also be PNGs).
PROB_EXTS = (".npy", ".npz")
#: File endings read as images.
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")

# Which extra brings which import (for the one-line "install ..." error).
_EXTRA_OF = {
    "skimage": ("scikit-image", "cli"),
    "matplotlib": ("matplotlib", "cli"),
    "torch": ("torch", "models"),
    "PIL": ("pillow", "cli"),
}


class InputError(ValueError):
    """A bad input file or argument, said in one line that names the file (a ValueError)."""


def need(module: str):
    """Imports ``module``, or raises InputError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg, extra = _EXTRA_OF.get(module.split(".")[0], (module.split(".")[0], "demo"))
        raise InputError(f"this needs {pkg}: pip install 'densecrf[{extra}]'") from None


def check_file(path, what: str) -> str:
    """``path`` as a string when it names an existing file; InputError otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{what} not found: {path}")
    if os.path.isdir(path):
        raise InputError(f"{what} is a folder, expected a file: {path}")
    return path


# -- reading ---------------------------------------------------------------------
def read_image(path, what: str = "image") -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB (grey, grey + alpha and RGBA converted)."""
    path = check_file(path, what)
    Image = need("PIL.Image")
    try:
        with warnings.catch_warnings():  # Pillow warns on some malformed files before it fails
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGB", "L"):  # the common case: no conversion beyond grey -> RGB
                    img = np.asarray(im)
                    if img.ndim == 2:
                        img = np.repeat(img[..., None], 3, axis=2)
                    return _checked_rgb(img, path, what)
                img = np.asarray(im if im.mode in ("RGBA", "LA", "I", "I;16", "F") else im.convert("RGB"))
    except InputError:
        raise
    except Exception:  # Pillow's messages name decoders, not the problem: say what it means
        raise InputError(f"{what} {path} is not a readable image file") from None
    return _checked_rgb(_to_rgb_uint8(img), path, what)


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """scikit-image's conversions for the uncommon modes (alpha blended on white, 16-bit scaled)."""
    color, util = need("skimage.color"), need("skimage.util")
    if img.ndim == 2:
        img = color.gray2rgb(img)
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = color.rgba2rgb(img)
    elif img.ndim == 3 and img.shape[-1] == 2:  # grey + alpha: the grey channel
        img = color.gray2rgb(img[..., 0])
    return util.img_as_ubyte(img) if img.dtype != np.uint8 else img


def _checked_rgb(img: np.ndarray, path: str, what: str) -> np.ndarray:
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
        raise InputError(f"{what} {path} must be a 2-D grey or colour image, got an array of shape {img.shape}")
    return np.ascontiguousarray(img)


def read_labels(path, what: str = "label image") -> np.ndarray:
    """A label PNG (palette or grey, one class index per pixel) as ``[H, W]`` int64."""
    path = check_file(path, what)
    Image = need("PIL.Image")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "1"):
                raise InputError(
                    f"{what} {path} must hold one class index per pixel (a palette or grey PNG), got a {im.mode} image"
                )
            return np.asarray(im, dtype=np.int64)
    except InputError:
        raise
    except Exception:
        raise InputError(f"{what} {path} is not a readable image file") from None


def read_npy(path, what: str = "array") -> np.ndarray:
    """A ``.npy`` array, or the array of an ``.npz`` (named ``prob`` or ``probs``, or its only one).

    No pickled objects are loaded. InputError naming ``what`` and the file otherwise.
    """
    path = check_file(path, what)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                names = list(data.files)
                name = next((n for n in ("prob", "probs") if n in names), names[0] if len(names) == 1 else None)
                if name is None:
                    raise InputError(
                        f"{what} {path}: an .npz must hold an array named 'prob' or 'probs', or a single "
                        f"array; it holds {names}"
                    )
                return data[name]
        return data
    except InputError:
        raise
    except (ValueError, EOFError, OSError, KeyError) as exc:  # not .npy/.npz, truncated, pickled objects, bad zip
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"could not read {what} from {path} (expected a .npy or .npz array): {first}") from None
    except Exception as exc:  # zipfile.BadZipFile and the like from a damaged .npz
        raise InputError(f"could not read {what} from {path}: {type(exc).__name__}: {exc}") from None


def _is_array_file(path: str) -> bool:
    if path.lower().endswith(PROB_EXTS):
        return True
    with open(path, "rb") as fh:
        head = fh.read(6)
    return head == b"\x93NUMPY" or head[:4] == b"PK\x03\x04"


def labels_to_probs(
    labels: np.ndarray, n_labels: int | None, gt_prob: float = 0.5, unknown=None, source: str = "labels"
) -> np.ndarray:
    """``[H, W, K]`` float32 probabilities of a hard label map: pydensecrf's ``unary_from_labels`` as probabilities.

    ``gt_prob`` is the probability given to the labelled class (the rest is
    spread evenly); pixels labelled ``unknown`` (pydensecrf's
    ``zero_unsure=True`` with unknown 0) get the uniform distribution.
    """
    from .features import unary_from_labels

    if n_labels is None:
        raise InputError(f"{source} is a label map: give the number of labels (n_labels / --n-labels K)")
    known = labels if unknown is None else labels[labels != unknown]
    if known.size and (known.min() < 0 or known.max() >= n_labels):
        raise InputError(
            f"{source} has labels in [{known.min()}, {known.max()}], outside [0, {n_labels}) for {n_labels} labels"
            + ("" if unknown is not None else " (see unknown / --unknown)")
        )
    unary = unary_from_labels(labels, n_labels, gt_prob=gt_prob, unknown=unknown)
    probs = np.exp(-unary.astype(np.float64))
    probs /= probs.sum(-1, keepdims=True)
    return probs.reshape(*labels.shape, n_labels).astype(np.float32)


def read_probs(
    path,
    hw: tuple[int, int] | None = None,
    *,
    n_labels: int | None = None,
    gt_prob: float = 0.5,
    unknown=None,
    what: str = "probabilities",
) -> np.ndarray:
    """A probability map ``[H, W, K]`` (float16/32/64 as stored) from a ``.npy`` or ``.npz``, or a label map.

    A 2-D integer array or a label PNG is a label map, turned into
    probabilities by :func:`labels_to_probs` (needs ``n_labels``). ``hw``, if
    given, is the image's (H, W) that the map must match.
    """
    path = check_file(path, what)
    if _is_array_file(path):
        arr = read_npy(path, what)
        if arr.ndim == 2 and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            labels = arr.astype(np.int64)
        else:
            if arr.ndim != 3:
                raise InputError(
                    f"{what} {path} must be [H, W, K] probabilities (or [H, W] integer labels), "
                    f"got an array of shape {arr.shape}"
                )
            if not np.issubdtype(arr.dtype, np.floating):
                raise InputError(f"{what} {path} must hold floating-point probabilities, got dtype {arr.dtype}")
            if hw is not None and arr.shape[:2] != tuple(hw):
                raise InputError(
                    f"{what} {path} has shape {arr.shape} but the image is {hw[0]} x {hw[1]} (H x W): "
                    f"expected ({hw[0]}, {hw[1]}, K)"
                )
            return arr
    else:
        labels = read_labels(path, what)
    if hw is not None and labels.shape != tuple(hw):
        raise InputError(
            f"{what} {path} is a {labels.shape[0]} x {labels.shape[1]} label map but the image is "
            f"{hw[0]} x {hw[1]} (H x W)"
        )
    return labels_to_probs(labels, n_labels, gt_prob, unknown, f"{what} {path}")


# -- writing -----------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in ``path``'s folder; on success renames it onto ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def voc_palette(n: int = 256) -> np.ndarray:
    """``[n, 3]`` uint8: the PASCAL VOC colour map (bits of the index spread over R, G, B)."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * shift + ch)) & 1) << (7 - shift)
    return pal.astype(np.uint8)


def palette(colours: str | np.ndarray) -> np.ndarray:
    """A colour map as ``[n, 3]`` uint8: ``"voc"``, or an ``[n, 3]`` array of 0..255 colours checked.

    Dataset palettes live with their datasets (``densecrf.models.camvid.PALETTE``):
    this module sits below them and does not import them.
    """
    if isinstance(colours, str):
        if colours == "voc":
            return voc_palette()
        raise InputError(f"palette must be 'voc' or an [n, 3] array of colours, got {colours!r}")
    pal = np.asarray(colours)
    if pal.ndim != 2 or pal.shape[1] != 3 or not pal.shape[0]:
        raise InputError(f"palette must have shape [n, 3], got {pal.shape}")
    if not np.issubdtype(pal.dtype, np.integer) or pal.min() < 0 or pal.max() > 255:
        raise InputError("palette colours must be integers in 0..255")
    return pal.astype(np.uint8)


#: zlib level of written PNGs: zlib's default, which is what Pillow uses when none is given.
PNG_COMPRESS_LEVEL = 6


def write_labels(
    path, labels: np.ndarray, palette: np.ndarray | None = None, *, compress_level: int = PNG_COMPRESS_LEVEL
) -> None:
    """Writes ``[H, W]`` labels as an 8-bit palette PNG (16-bit grey above 256 labels), atomically."""
    Image = need("PIL.Image")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"labels must be [H, W], got shape {labels.shape}")
    if labels.max(initial=0) < 256 and labels.min(initial=0) >= 0:
        im = Image.fromarray(labels.astype(np.uint8))
        pal = np.zeros((256, 3), dtype=np.uint8)
        if palette is None:
            palette = voc_palette()
        pal[: len(palette)] = palette[:256]
        im.putpalette(pal.ravel().tolist())  # makes the grey image a palette ("P") image
    else:
        im = Image.fromarray(labels.astype(np.uint16))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", compress_level=compress_level)


def write_probs(path, probs: np.ndarray, dtype=np.float32) -> None:
    """Writes probabilities as a ``.npy`` of ``dtype`` (float16 or float32), atomically."""
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise InputError(f"probabilities are written as float16 or float32, got dtype {dtype}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(probs, dtype=dtype), allow_pickle=False)
