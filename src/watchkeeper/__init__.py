"""watchkeeper: host monitoring and self-healing with cooperating agents on a message bus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("watchkeeper")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
