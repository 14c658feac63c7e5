"""Command line: ``densecrf demo | refine | eval | fit | train | bench | refine-instances | refine-panoptic``.

One module per command (``add_parser`` and ``run``), the shared dense-CRF
flags in :mod:`densecrf.cli.common`. Commands call the library; no library
module imports this package.

Every command reports bad input (missing files, unreadable images, shapes
that do not fit, bad parameters, bad arguments) as one line
``densecrf <cmd>: error: ...`` on stderr and exits with status 2, never
with a traceback; ``--help`` prints the whole help. Images and maps are read
and written by :mod:`densecrf.io` (Pillow), figures drawn with matplotlib
and the networks run with torch: each imported only by the commands that
need it (extras ``cli``, ``models`` and ``demo`` = both).
"""

from __future__ import annotations

import os
import sys
import time

from . import bench, demo, eval, fit, refine, refine_instances, refine_panoptic, train
from .common import CLIError, OneLineParser

__all__ = ["CLIError", "build_parser", "main", "run"]


def build_parser() -> OneLineParser:
    """The ``densecrf`` parser; each subcommand's ``func`` runs it (``train`` is dispatched by :func:`main`)."""
    p = OneLineParser(prog="densecrf", description="Fast dense CRFs: demo, refine, eval, fit, train, bench.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(sub)
    refine.add_parser(sub)
    eval.add_parser(sub)
    fit.add_parser(sub)
    train.add_parser(sub)
    bench.add_parser(sub)
    refine_instances.add_parser(sub)
    refine_panoptic.add_parser(sub)
    return p


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit status (0, or 2 after a one-line error on stderr)."""
    t_start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    name = f"densecrf {command}" if command and not command.startswith("-") else "densecrf"
    try:
        if command == "train":  # train has its own parser: everything after the word goes to it
            return train.run(argv[1:])
        try:
            args = build_parser().parse_command_line(argv)
        except SystemExit as exc:  # --help (0), or the one-line error already printed (2)
            return exc.code if isinstance(exc.code, int) else 2
        args.t_start = t_start
        return int(args.func(args))
    except CLIError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, EOFError, ImportError) as exc:
        print(f"{name}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # e.g. PIL's DecompressionBombError: still one line, no traceback
        print(f"{name}: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``densecrf`` console script: main(), then a hard exit once the output is flushed.

    Tearing the interpreter down after torch and matplotlib have been
    imported took 1.5 to 2 s of the demo's wall time on the project's 2-core
    machine; there is nothing left to clean up by then (every file written
    is closed), so, as mypy does, the process ends without the teardown.
    ``train`` exits normally (its process group and checkpoints are its own).
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] == ["train"]:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
