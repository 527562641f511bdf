"""``python -m probae``: the command line (see :mod:`probae.cli`)."""

from .cli import main

raise SystemExit(main())
