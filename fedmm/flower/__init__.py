"""Flower adapters over fedmm's strategies: ServerApp, ClientApp and a long-running ClientApp executor.

Everything here imports ``flwr`` and runs in the Flower virtual environment (``make
install-site``), never in the pipeline's. The logic they call lives in :mod:`fedmm.fl`.
"""
