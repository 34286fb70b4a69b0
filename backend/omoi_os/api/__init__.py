"""The HTTP API."""

from omoi_os.api.app import create_app

__all__ = ["create_app"]
