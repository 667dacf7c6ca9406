"""`python -m poller` is the `poller` command."""

from poller.cli import entry

entry()
