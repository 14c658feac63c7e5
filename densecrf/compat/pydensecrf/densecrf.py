"""pydensecrf's ``densecrf`` module API on top of densecrf's native core.

A matrix compatibility is symmetrised, (W + W^T) / 2, as pydensecrf does
(densecrf.DenseCRF uses a matrix as given). Layouts follow pydensecrf: unaries are ``[K, N]``, features ``[d, N]``, the
result of ``inference`` is ``[K, N]``, images are ``[H, W, 3]`` uint8. Arrays
of another float dtype or memory order are accepted (pydensecrf rejected
them) and converted; the caller's arrays are never modified.
"""

from __future__ import annotations

import enum

import numpy as np

from ... import _checks
from ...crf import DenseCRF as _DenseCRF
from ...crf import DenseCRF2D as _DenseCRF2D


class KernelType(enum.IntEnum):
    CONST_KERNEL = 0
    DIAG_KERNEL = 1
    FULL_KERNEL = 2


class NormalizationType(enum.IntEnum):
    NO_NORMALIZATION = 0
    NORMALIZE_BEFORE = 1
    NORMALIZE_AFTER = 2
    NORMALIZE_SYMMETRIC = 3


CONST_KERNEL = KernelType.CONST_KERNEL
DIAG_KERNEL = KernelType.DIAG_KERNEL
FULL_KERNEL = KernelType.FULL_KERNEL
NO_NORMALIZATION = NormalizationType.NO_NORMALIZATION
NORMALIZE_BEFORE = NormalizationType.NORMALIZE_BEFORE
NORMALIZE_AFTER = NormalizationType.NORMALIZE_AFTER
NORMALIZE_SYMMETRIC = NormalizationType.NORMALIZE_SYMMETRIC


class Unary:
    """Base of pydensecrf's unary classes."""


class ConstUnary(Unary):
    """A constant unary energy ``[K, N]`` (pydensecrf.densecrf.ConstUnary)."""

    def __init__(self, u):
        self.u = _checks.as_f32(u, "u", ndim=2)


def _pyd_compat(compat):
    """pydensecrf's MatrixCompatibility uses the symmetric part of the matrix."""
    if isinstance(compat, (int, float, np.number)):
        return compat
    c = _checks.as_f32(compat, "compat")
    return 0.5 * (c + c.T) if c.ndim == 2 and c.shape[0] == c.shape[1] else c


def _as_kn_to_nk(a, name, k, n):
    arr = _checks.as_f32(a, name, ndim=2)
    if arr.shape != (k, n):
        raise ValueError(f"Bad shape for {name} (Need {(k, n)}, got {tuple(arr.shape)})")
    return np.ascontiguousarray(arr.T)


class DenseCRF:
    """pydensecrf.densecrf.DenseCRF(nvar, nlabels)."""

    def __init__(self, nvar, nlabels, *args, **kwargs):
        self._crf = self._make(nvar, nlabels, *args, **kwargs)
        self._nvar = self._crf.n_points
        self._nlabel = self._crf.n_labels

    @staticmethod
    def _make(nvar, nlabels, *_, **__):
        return _DenseCRF(nvar, nlabels)

    def setUnaryEnergy(self, u, f=None):
        """Sets the unary energy ``u`` ``[nlabels, nvar]``."""
        if f is not None:
            raise NotImplementedError(
                "setUnaryEnergy(u, f) builds pydensecrf's LogisticUnaryEnergy for parameter learning, "
                "which densecrf does not provide; learn parameters with densecrf.nn instead"
            )
        self._crf.set_unary(_as_kn_to_nk(u, "unary energy", self._nlabel, self._nvar))

    def setUnary(self, u):
        if not isinstance(u, ConstUnary):
            raise TypeError(f"setUnary takes a ConstUnary, got {type(u).__name__}")
        self.setUnaryEnergy(u.u)

    def addPairwiseEnergy(self, features, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC):
        """Adds a pairwise term over ``features`` ``[d, nvar]``."""
        f = _checks.as_f32(features, "features", ndim=2)
        if f.shape[1] != self._nvar:
            raise ValueError(f"Bad shape for pairwise energy (Need (?, {self._nvar}), got {tuple(f.shape)})")
        self._crf.add_pairwise(
            np.ascontiguousarray(f.T), _pyd_compat(compat), kernel=int(kernel), normalization=int(normalization)
        )

    def inference(self, niter):
        """Runs ``niter`` mean-field iterations; returns Q ``[nlabels, nvar]`` float32."""
        return np.ascontiguousarray(self._crf.inference(niter).T)

    def startInference(self):
        """Returns (Q, tmp1, tmp2) as pydensecrf does; only Q is used."""
        q = np.ascontiguousarray(self._crf.start_inference().T)
        return q, np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)

    def stepInference(self, Q, tmp1=None, tmp2=None):
        """One mean-field iteration, updating ``Q`` ``[nlabels, nvar]`` in place (as pydensecrf does)."""
        if (
            not isinstance(Q, np.ndarray)
            or Q.dtype != np.float32
            or Q.shape != (self._nlabel, self._nvar)
            or not Q.flags.writeable
        ):
            raise ValueError(
                f"Q must be the writable float32 array of shape {(self._nlabel, self._nvar)} returned by startInference"
            )
        Q[...] = self._crf.step_inference(Q.T).T

    def klDivergence(self, Q):
        """KL divergence of ``Q`` ``[nlabels, nvar]`` (up to the log-partition constant)."""
        q = _checks.as_f32(Q, "Q", ndim=2)
        if q.shape != (self._nlabel, self._nvar):
            raise ValueError(f"Bad shape for Q (Need {(self._nlabel, self._nvar)}, got {tuple(q.shape)})")
        return self._crf.kl_divergence(q.T)


class DenseCRF2D(DenseCRF):
    """pydensecrf.densecrf.DenseCRF2D(w, h, nlabels)."""

    def __init__(self, w, h, nlabels, *args, **kwargs):
        self._crf = _DenseCRF2D(w, h, nlabels)
        self._w, self._h = self._crf.width, self._crf.height
        self._nvar = self._crf.n_points
        self._nlabel = self._crf.n_labels

    def addPairwiseGaussian(self, sxy, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC):
        self._crf.add_pairwise_gaussian(sxy, _pyd_compat(compat), kernel=int(kernel), normalization=int(normalization))

    def addPairwiseBilateral(self, sxy, srgb, rgbim, compat, kernel=DIAG_KERNEL, normalization=NORMALIZE_SYMMETRIC):
        im = _checks.as_array(rgbim, "rgbim")
        if im.ndim != 3 or im.shape[0] != self._h or im.shape[1] != self._w:
            raise ValueError(f"Bad shape for pairwise bilateral (Need {(self._h, self._w, 3)}, got {tuple(im.shape)})")
        if im.shape[2] != 3:
            raise ValueError(
                "addPairwiseBilateral only works for RGB images. For other types, use "
                "`utils.create_pairwise_bilateral` to construct your own pairwise energy and add it "
                "through `addPairwiseEnergy`."
            )
        if im.dtype != np.uint8:
            raise TypeError(f"rgbim must be uint8 as in pydensecrf, got {im.dtype}")
        self._crf.add_pairwise_bilateral(
            sxy, srgb, im, _pyd_compat(compat), kernel=int(kernel), normalization=int(normalization)
        )
