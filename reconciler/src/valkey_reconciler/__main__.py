"""Lets `python -m valkey_reconciler` run the command-line tool."""

from valkey_reconciler.cli import main

raise SystemExit(main())
