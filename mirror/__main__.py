"""`python -m mirror` runs the CLI."""

from mirror.cli import main

main()
