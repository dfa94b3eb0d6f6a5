"""`python -m energyprune.cli`."""

from energyprune.cli import main

raise SystemExit(main())
