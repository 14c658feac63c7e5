"""densecrf: fast, differentiable fully connected CRFs.

Permutohedral-lattice Gaussian filtering (Adams et al. 2010) driving
mean-field inference (Kraehenbuehl and Koltun 2011), in C++ with a numpy API.
"""

from . import _checks, cuda  # cuda: the CUDA backend's API; importing it needs neither a GPU nor torch
from ._native import _C, get_num_threads
from ._native import build_info as _build_info
from ._version import __version__
from .backends.cuda import cuda_available
from .crf import DenseCRF, DenseCRF2D, KernelType, Normalization, grid_positions, refine, refine_batch
from .features import bilateral_features, gaussian_features, unary_from_labels, unary_from_softmax
from .fit import fit
from .instance_fit import fit_instances, fit_panoptic
from .instances import InstanceParams, paste_masks, refine_instances, refine_panoptic
from .lattice import PermutohedralLattice


def set_num_threads(n) -> None:
    """Sets the default number of native worker threads; ``None`` or 0 means all cores."""
    _C.set_num_threads(0 if n is None or (not isinstance(n, bool) and n == 0) else _checks.threads_arg(n))


def __getattr__(name):
    # densecrf.refine_dataset and densecrf.iter_refine (densecrf.dataset), imported on first use:
    # the pipeline's modules (multiprocessing, concurrent.futures) stay out of `import densecrf`.
    if name in ("refine_dataset", "iter_refine"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'densecrf' has no attribute {name!r}")


def show_config() -> dict:
    """Prints and returns the build configuration: version, compiler, CPU features, CUDA, threads."""
    info = dict(_build_info())
    info["version"] = __version__
    info["threads"] = get_num_threads()
    for key, value in info.items():
        print(f"{key}: {value}")
    return info


__all__ = [
    "DenseCRF",
    "DenseCRF2D",
    "InstanceParams",
    "KernelType",
    "Normalization",
    "PermutohedralLattice",
    "__version__",
    "bilateral_features",
    "cuda",
    "cuda_available",
    "fit",
    "fit_instances",
    "fit_panoptic",
    "gaussian_features",
    "get_num_threads",
    "grid_positions",
    "iter_refine",
    "paste_masks",
    "refine",
    "refine_batch",
    "refine_dataset",
    "refine_instances",
    "refine_panoptic",
    "set_num_threads",
    "show_config",
    "unary_from_labels",
    "unary_from_softmax",
]
