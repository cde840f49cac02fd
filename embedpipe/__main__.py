"""`python -m embedpipe` is the `embedpipe` command."""

from embedpipe.cli import main

main()
