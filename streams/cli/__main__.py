"""`python -m streams.cli`: the `scorestream` command."""

from streams.cli import main

raise SystemExit(main())
