"""REST API: create_app(runtime) serves the runtime's state and commands over HTTP."""

from watchkeeper.api.app import create_app

__all__ = ["create_app"]
