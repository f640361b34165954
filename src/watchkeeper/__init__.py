"""watchkeeper: host monitoring and self-healing with cooperating agents on a message bus."""

# A literal, read by setuptools for the package metadata (pyproject's dynamic version): no
# importlib.metadata lookup at every start.
__version__ = "0.1.0"
