"""`python -m mlplab` = the `mlplab` command."""

from .cli import main

main()
