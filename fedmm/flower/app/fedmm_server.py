"""The ServerApp component of the fedmm Flower App."""

from fedmm.flower.server_app import app

__all__ = ["app"]
