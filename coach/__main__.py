"""`python -m coach` runs the `coach` command."""

from coach.cli.main import main

main()
