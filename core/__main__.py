"""``python -m genplug`` runs the command-line interface."""

from genplug.cli.main import main

raise SystemExit(main())
