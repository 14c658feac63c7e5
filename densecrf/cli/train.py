"""``densecrf train ...``: the arguments of ``python -m densecrf.models.train``, passed through."""

from __future__ import annotations

import argparse

from .common import OneLineParser, need


def add_parser(sub: argparse._SubParsersAction) -> None:
    # A placeholder for the command list: everything after the word `train` goes to
    # densecrf.models.train's own parser (see run), which imports torch.
    sub.add_parser("train", help="train the network (arguments of python -m densecrf.models.train)", add_help=False)


def run(argv: list[str]) -> int:
    need("torch")
    from ..models import train

    try:
        return int(train.main(argv, parser_class=OneLineParser) or 0)
    except SystemExit as exc:  # its parser has printed the one-line error, or the help
        return exc.code if isinstance(exc.code, int) else 2
