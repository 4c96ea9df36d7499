"""`make bench` = `python -m bench`: see bench/README.md and bench/harness.py."""

from bench.harness import main

raise SystemExit(main())
