"""The implementations compared, each behind one function: the whole call from inputs to Q.

Every peer takes the same inputs, ``image`` ``[H, W, 3]`` uint8 and ``probs``
``[H, W, K]`` float32, and the parameters of :data:`densecrf.bench.CLASSIC`, and
returns its natural output (timed as is); :func:`as_hwk` turns that into
``[H, W, K]`` probabilities (or ``[H, W]`` labels) for the comparison, outside
the timed region. A peer's whole call includes the unary (-log p), the
features, the lattice builds and the inference, as a user of it would write.

:func:`load_peer` imports a peer lazily and returns ``(call, None)`` or
``(None, reason)`` when it cannot run here, so that a missing optional
package is skipped with a printed reason rather than an error.
"""

from __future__ import annotations

import numpy as np

from densecrf.bench import CLASSIC, pydensecrf_refine

# Peers whose outputs must agree with densecrf's: the gate of side_by_side.py.
GATED = ("pydensecrf",)
ALL = ("densecrf", "pydensecrf", "simplecrf", "monai")
# Peers without threads: timed once, shown with 1 thread.
SINGLE_THREADED = ("pydensecrf", "simplecrf")


def _densecrf(image, probs, params, n_iter, threads):
    import densecrf

    return densecrf.refine(image, probs, n_iter=n_iter, threads=threads, **params)


def _pydensecrf(image, probs, params, n_iter, threads):
    return pydensecrf_refine(image, probs, n_iter, params)  # [H, W, K]


def _simplecrf(image, probs, params, n_iter, threads):
    import denseCRF

    # SimpleCRF's densecrf(I, P, (w1, alpha, beta, w2, gamma, it)): bilateral
    # weight, sxy, srgb, Gaussian weight, sxy, iterations. Returns MAP labels.
    param = (
        params["bilateral_compat"],
        params["bilateral_sxy"],
        params["bilateral_srgb"],
        params["gaussian_compat"],
        params["gaussian_sxy"],
        float(n_iter),
    )
    return denseCRF.densecrf(np.ascontiguousarray(image), np.ascontiguousarray(probs), param)


def _monai(image, probs, params, n_iter, threads):
    import torch
    from monai.networks.blocks import CRF

    torch.set_num_threads(threads)
    # MONAI's CRF: Q <- softmax(x + update * (wb * B(Q) + wg * G(Q))) with
    # unnormalised filters B, G and x the input logits; log p as logits and
    # the Potts weights as filter weights is the closest to the classic model.
    logits = torch.from_numpy(np.log(np.clip(probs, 1e-5, 1.0))).permute(2, 0, 1)[None]
    ref = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    crf = CRF(
        iterations=n_iter,
        bilateral_weight=params["bilateral_compat"],
        gaussian_weight=params["gaussian_compat"],
        bilateral_spatial_sigma=params["bilateral_sxy"],
        bilateral_color_sigma=params["bilateral_srgb"],
        gaussian_spatial_sigma=params["gaussian_sxy"],
        update_factor=1.0,
    )
    with torch.no_grad():
        return crf(logits.contiguous(), ref.contiguous())[0].numpy()  # [K, H, W]


# What to do when a peer does not run (seen on this project's machines).
HINTS = {
    "simplecrf": "pip install SimpleCRF (0.2.1.1 does not build against numpy 2: NPY_IN_ARRAY undeclared)",
    "monai": "MONAI's PyPI wheel has no compiled extension (monai._C) and its CRF needs it: "
    "BUILD_MONAI=1 pip install --no-build-isolation monai",
}

_CALLS = {"densecrf": _densecrf, "pydensecrf": _pydensecrf, "simplecrf": _simplecrf, "monai": _monai}


def as_hwk(name: str, out, shape) -> np.ndarray:
    """A peer's output as ``[H, W, K]`` float probabilities, or ``[H, W]`` labels for SimpleCRF."""
    h, w, _ = shape
    out = np.asarray(out)
    if name in ("densecrf", "pydensecrf"):
        return out
    if name == "monai":
        return out.transpose(1, 2, 0)
    return out.reshape(h, w)


def load_peer(name: str):
    """(call, None) when ``name`` runs here, else (None, reason).

    A peer counts as available only after a 16 x 16 call succeeds: MONAI
    imports without its compiled extension and fails on first use.
    """
    if name not in _CALLS:
        return None, f"unknown peer {name!r} (known: {', '.join(ALL)})"
    call = _CALLS[name]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), (16, 16)).astype(np.float32)
    try:
        call(image, probs, CLASSIC, 1, 1)
    except Exception as exc:  # any failure means "cannot run here"
        msg = str(exc).strip().splitlines()
        hint = f" [{HINTS[name]}]" if name in HINTS else ""
        return None, f"{type(exc).__name__}: {msg[0] if msg else ''}{hint}"
    return call, None


def compare(name: str, out_hwk: np.ndarray, ref_hwk: np.ndarray) -> dict:
    """Agreement of a peer's output with densecrf's: MAP label agreement and max |dQ|."""
    ref_map = ref_hwk.argmax(axis=-1)
    if out_hwk.ndim == 2:
        return {"map_agree": float((out_hwk == ref_map).mean()), "max_abs_dq": None}
    return {
        "map_agree": float((out_hwk.argmax(axis=-1) == ref_map).mean()),
        "max_abs_dq": float(np.abs(out_hwk.astype(np.float64) - ref_hwk).max()),
    }
