"""What the commands share: the one-line error, optional imports, the dense-CRF flags and ``crf_params``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from ..io import InputError, check_file
from ..params import CRFParams, as_params

# Which extra brings which import (for the one-line "install ..." error).
_EXTRA_OF = {
    "skimage": ("scikit-image", "cli"),
    "matplotlib": ("matplotlib", "cli"),
    "tqdm": ("tqdm", "cli"),
    "torch": ("torch", "models"),
    "PIL": ("pillow", "cli"),
    "pytest_benchmark": ("pytest-benchmark", "bench"),
}


class CLIError(InputError):
    """A user-facing error: printed as one line, exit status 2 (a ValueError for callers outside the CLI)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors as one line, ``densecrf <cmd>: error: <message>``, and exit status 2.

    ``--help`` still prints the whole help. argparse's own error() prints the
    usage block first (a dozen lines for refine); the usage is one
    ``--help`` away, and the promise of the command line is one line per error.
    """

    def error(self, message: str) -> NoReturn:
        self._fail(self.prog, message)

    def _fail(self, prog: str, message: str) -> NoReturn:
        self.exit(2, f"{prog}: error: {message} (see {prog} --help)\n")

    def parse_command_line(self, args: Sequence[str]) -> argparse.Namespace:
        """parse_args, with unknown arguments blamed on the subcommand they were given to (argparse blames the top)."""
        ns, extra = self.parse_known_args(args)
        if extra:
            command = getattr(ns, "command", None)
            self._fail(f"{self.prog} {command}" if command else self.prog, f"unrecognized arguments: {' '.join(extra)}")
        return ns


def need(module: str) -> ModuleType:
    """Imports ``module``, or raises CLIError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        pkg, extra = _EXTRA_OF.get(top, (top, "demo"))
        raise CLIError(f"this command needs {pkg}: pip install 'densecrf[{extra}]'") from None


def check_folder_of(path: str, what: str) -> None:
    """CLIError when the folder that should receive ``path`` does not exist."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise CLIError(f"{what} folder does not exist: {os.path.dirname(path) or '.'}")


# -- dense-CRF parameters from --params and flags ---------------------------------
def _compat_type(text: str) -> float | str:
    if text.lower() == "none":
        return "none"
    return float(text)


def _srgb_type(text: str) -> float | list[float]:
    vals = [float(p) for p in text.split(",")]
    return vals[0] if len(vals) == 1 else vals


def add_crf_flags(p: argparse.ArgumentParser, defaults: str) -> None:
    """The dense-CRF flags; ``defaults`` says which parameters apply when neither --params nor a flag is given."""
    g = p.add_argument_group("dense CRF parameters", defaults)
    g.add_argument(
        "--params",
        metavar="FILE.json",
        default=None,
        help="CRF parameters from a JSON file (densecrf.params); the flags below override it",
    )
    g.add_argument("--iters", type=int, default=None, help="mean-field iterations (classic: 5)")
    g.add_argument("--gaussian-sxy", type=float, default=None, help="smoothness bandwidth in pixels (classic: 3)")
    g.add_argument(
        "--gaussian-compat",
        type=_compat_type,
        default=None,
        help="smoothness Potts weight (classic: 3); 'none' drops the term",
    )
    g.add_argument("--bilateral-sxy", type=float, default=None, help="appearance bandwidth in pixels (classic: 80)")
    g.add_argument(
        "--bilateral-srgb",
        type=_srgb_type,
        default=None,
        help="appearance colour bandwidth, one number or R,G,B (classic: 13)",
    )
    g.add_argument(
        "--bilateral-compat",
        type=_compat_type,
        default=None,
        help="appearance Potts weight (classic: 10); 'none' drops the term",
    )
    g.add_argument(
        "--normalization",
        choices=("symmetric", "before", "after", "none"),
        default=None,
        help="kernel normalisation (classic: symmetric)",
    )
    g.add_argument("--threads", type=int, default=None, help="native threads (default: all cores)")


_FLAG_FIELDS = {
    "iters": "n_iter",
    "gaussian_sxy": "gaussian_sxy",
    "gaussian_compat": "gaussian_compat",
    "bilateral_sxy": "bilateral_sxy",
    "bilateral_srgb": "bilateral_srgb",
    "bilateral_compat": "bilateral_compat",
    "normalization": "normalization",
}


def crf_params(args: argparse.Namespace, default_file: str | None = None) -> CRFParams:
    """CRFParams: ``--params`` (else ``default_file`` if it exists, else the classic ones), then the flags given."""
    path = args.params or (default_file if default_file and os.path.exists(default_file) else None)
    if path is not None:
        check_file(path, "params file")
        try:
            base = as_params(path)
        except ValueError as exc:
            msg = str(exc).splitlines()[0]
            raise CLIError(msg if path in msg else f"params file {path}: {msg}") from None
    else:
        base = CRFParams()
    over = flag_overrides(args)
    return dataclasses.replace(base, **over) if over else base


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The CRFParams fields given by CRF flags on the command line (the flags not given are absent)."""
    over: dict[str, Any] = {}
    for flag, fld in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            # "none" drops a term for the compat flags only; --normalization none is a normalisation
            over[fld] = None if value == "none" and fld.endswith("_compat") else value
    return over


def describe(params: CRFParams) -> str:
    """One line: iterations, both terms' bandwidths and weights."""
    srgb = params.bilateral_srgb
    return (
        f"{params.n_iter} iterations, gaussian sxy {params.gaussian_sxy:g} compat {_short(params.gaussian_compat)}, "
        f"bilateral sxy {params.bilateral_sxy:g} srgb {srgb if isinstance(srgb, list) else f'{srgb:g}'} "
        f"compat {_short(params.bilateral_compat)}"
    )


def _short(compat: object) -> str:
    if compat is None:
        return "none"
    if isinstance(compat, float):
        return f"{compat:g}"
    return f"[{np.asarray(compat).shape[0]} classes]"
