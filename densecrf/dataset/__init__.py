"""Refine whole datasets: folders of images and maps to folders of label PNGs, on any executor.

:func:`refine_dataset` runs a dataset and returns a :class:`Summary`;
:func:`iter_refine` yields each item's result in input order for use inside
other code. Presets (:mod:`.presets`) reproduce published pipelines' CRF
calls; executors (:mod:`.executors`) run on this machine's cores, a GPU, a
Dask or a Ray cluster with the same per-item code; a manifest in the output
folder (:mod:`.manifest`) makes runs resumable. See docs/datasets.md.

Nothing here imports torch, dask or ray until an executor that needs it runs.
"""

from .executors import EXECUTORS, CudaExecutor, DaskExecutor, LocalExecutor, RayExecutor
from .manifest import MANIFEST_NAME, Manifest
from .pipeline import Summary, iter_refine, make_job, refine_dataset
from .presets import PRESETS, Preset, get_preset
from .work import ItemResult, Job

__all__ = [
    "EXECUTORS",
    "MANIFEST_NAME",
    "PRESETS",
    "CudaExecutor",
    "DaskExecutor",
    "ItemResult",
    "Job",
    "LocalExecutor",
    "Manifest",
    "Preset",
    "RayExecutor",
    "Summary",
    "get_preset",
    "iter_refine",
    "make_job",
    "refine_dataset",
]
