"""The HTTP API: routers a host includes (`consolidation_router`, `ops_router`) and
the standalone app built from them (`create_app`)."""

from omoi_os.api.app import create_app
from omoi_os.api.router import consolidation_router, ops_router

__all__ = ["consolidation_router", "create_app", "ops_router"]
