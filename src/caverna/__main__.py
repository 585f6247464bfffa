"""`python -m caverna` is the `caverna` command."""

from caverna.cli.app import main

main()
