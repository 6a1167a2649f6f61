"""The ClientApp component of the fedmm Flower App."""

from fedmm.flower.client_app import app

__all__ = ["app"]
