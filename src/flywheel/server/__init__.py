"""server: Flywheel over HTTP (FastAPI), a thin shell over the SDK."""

from flywheel.server.app import create_app

__all__ = ["create_app"]
