"""poller: Lambda's event source mappings as a self-hosted daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One source of truth: the version in pyproject.toml, as the installed distribution has it.
    __version__ = version("poller")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
