"""`python -m densecrf`: the command line (see densecrf.cli)."""

from .cli import run

run()
