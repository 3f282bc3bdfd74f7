"""Allow ``python -m slicelib``."""

from slicelib.cli import main

raise SystemExit(main())
