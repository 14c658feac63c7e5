"""`python -m densecrf`: the command line (see densecrf.cli)."""

from .cli import main

raise SystemExit(main())
