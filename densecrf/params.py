"""Dense-CRF parameters as one object and a small JSON file.

A :class:`CRFParams` holds what :func:`densecrf.refine` needs besides the
image and the probabilities: the two terms' bandwidths and compatibilities
(a Potts weight, a ``[K]`` diagonal or a ``[K, K]`` matrix, an energy in
:class:`densecrf.DenseCRF`'s convention; ``None`` drops the term), the
number of iterations and the normalisation. ``densecrf.fit`` writes one,
``refine(..., params=...)``, :meth:`densecrf.DenseCRF2D.add_params`, the
command line (``--params FILE``) and ``densecrf.nn.CRFasRNN.from_params``
read it.

The file is JSON::

    {"format": "densecrf-params", "version": 1, "n_iter": 5,
     "gaussian": {"sxy": 3.0, "compat": 3.0},
     "bilateral": {"sxy": 80.0, "srgb": 13.0, "compat": 10.0},
     "normalization": "symmetric", "info": {...}}

``info`` is free-form provenance (how the parameters were found, scores).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

#: A term's compatibility as given: a Potts weight, a [K] diagonal or a [K, K] matrix (None drops the term);
#: stored as a float or nested lists of floats.
Compat: TypeAlias = float | Sequence[float] | Sequence[Sequence[float]] | np.ndarray | None
#: The bilateral colour bandwidth: one number, or one per channel (stored as a float or a list).
Srgb: TypeAlias = float | Sequence[float] | np.ndarray

FORMAT = "densecrf-params"
VERSION = 1
_NORMALIZATIONS = ("symmetric", "before", "after", "none")


def _number(value, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a {'positive' if positive else 'finite'} number, got {value!r}")
    return v


def _compat(value, name: str):
    """None, a float, or a float list ([K] or [K, K]) checked for finiteness and shape."""
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return _number(value, name, positive=False)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, a [K] list or a [K, K] list of lists, got {value!r}") from None
    if arr.ndim == 0:
        return _number(float(arr), name, positive=False)
    if arr.ndim not in (1, 2) or arr.size == 0 or (arr.ndim == 2 and arr.shape[0] != arr.shape[1]):
        raise ValueError(f"{name} must be a number, a [K] list or a [K, K] list of lists, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries")
    return arr.tolist()


def _srgb(value, name: str):
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = [_number(v, f"{name}[{i}]", positive=True) for i, v in enumerate(np.asarray(value).ravel().tolist())]
        if not vals:
            raise ValueError(f"{name} must not be empty")
        return vals
    return _number(value, name, positive=True)


@dataclass
class CRFParams:
    """Parameters of a two-term dense CRF (defaults: pydensecrf's classic ones)."""

    n_iter: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: Compat = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: Srgb = 13.0
    bilateral_compat: Compat = 10.0
    normalization: str = "symmetric"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, numbers.Integral) or self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {self.n_iter!r}")
        self.n_iter = int(self.n_iter)
        self.gaussian_sxy = _number(self.gaussian_sxy, "gaussian sxy", positive=True)
        self.bilateral_sxy = _number(self.bilateral_sxy, "bilateral sxy", positive=True)
        self.bilateral_srgb = _srgb(self.bilateral_srgb, "bilateral srgb")
        self.gaussian_compat = _compat(self.gaussian_compat, "gaussian compat")
        self.bilateral_compat = _compat(self.bilateral_compat, "bilateral compat")
        if self.normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {self.normalization!r}")
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {type(self.info).__name__}")

    # -- conversions --------------------------------------------------------
    def refine_kwargs(self) -> dict:
        """Keyword arguments of :func:`densecrf.refine` (compatibilities as numpy arrays)."""

        def c(v):
            return v if v is None or isinstance(v, float) else np.asarray(v, dtype=np.float32)

        srgb = self.bilateral_srgb if isinstance(self.bilateral_srgb, float) else tuple(self.bilateral_srgb)
        return {
            "n_iter": self.n_iter,
            "gaussian_sxy": self.gaussian_sxy,
            "gaussian_compat": c(self.gaussian_compat),
            "bilateral_sxy": self.bilateral_sxy,
            "bilateral_srgb": srgb,
            "bilateral_compat": c(self.bilateral_compat),
            "normalization": self.normalization,
        }

    def n_labels(self) -> int | None:
        """K implied by a vector or matrix compatibility, or None for Potts weights only."""
        ks = {len(v) for v in (self.gaussian_compat, self.bilateral_compat) if isinstance(v, list)}
        if len(ks) > 1:
            raise ValueError(f"the two terms' compatibilities imply different label counts {sorted(ks)}")
        return ks.pop() if ks else None

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "n_iter": self.n_iter,
            "gaussian": {"sxy": self.gaussian_sxy, "compat": self.gaussian_compat},
            "bilateral": {"sxy": self.bilateral_sxy, "srgb": self.bilateral_srgb, "compat": self.bilateral_compat},
            "normalization": self.normalization,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CRFParams:
        if not isinstance(d, dict):
            raise ValueError(f"CRF parameters must be a JSON object, got {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"not a densecrf parameter file (format {d.get('format')!r})")
        if d.get("version", VERSION) != VERSION:
            raise ValueError(
                f"densecrf parameter file version {d.get('version')!r} is not supported (this is {VERSION})"
            )
        known = {"format", "version", "n_iter", "gaussian", "bilateral", "normalization", "info"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown keys in CRF parameters: {sorted(unknown)}")
        g, b = d.get("gaussian", {}), d.get("bilateral", {})
        for name, term, keys in (("gaussian", g, {"sxy", "compat"}), ("bilateral", b, {"sxy", "srgb", "compat"})):
            if term is None:
                continue
            if not isinstance(term, dict) or set(term) - keys:
                raise ValueError(f"'{name}' must be an object with keys {sorted(keys)}, got {term!r}")
        base = cls()
        g = g if g is not None else {"compat": None}
        b = b if b is not None else {"compat": None}
        return cls(
            n_iter=d.get("n_iter", base.n_iter),
            gaussian_sxy=g.get("sxy", base.gaussian_sxy),
            gaussian_compat=g.get("compat", base.gaussian_compat),
            bilateral_sxy=b.get("sxy", base.bilateral_sxy),
            bilateral_srgb=b.get("srgb", base.bilateral_srgb),
            bilateral_compat=b.get("compat", base.bilateral_compat),
            normalization=d.get("normalization", base.normalization),
            info=d.get("info", {}),
        )

    def save(self, path) -> None:
        """Writes the JSON file (atomically: a temporary file, then a rename)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> CRFParams:
        return cls.from_dict(read_json(path))


def as_params(params) -> CRFParams:
    """A CRFParams from a CRFParams, a dict (the JSON layout) or a path to a JSON file."""
    if isinstance(params, CRFParams):
        return params
    if isinstance(params, dict):
        return CRFParams.from_dict(params)
    if isinstance(params, (str, os.PathLike)):
        return CRFParams.load(params)
    raise TypeError(f"params must be a CRFParams, a dict or a path to a JSON file, got {type(params).__name__}")


__all__ = ["CRFParams", "Compat", "Srgb", "as_params"]


def write_json(path, d: dict) -> None:
    """Writes ``d`` as indented JSON, atomically (a temporary file, then a rename): parameter files."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as fh:
        json.dump(d, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def read_json(path) -> dict:
    """A parameter file's JSON, with a ValueError naming the file when it is not valid JSON."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
