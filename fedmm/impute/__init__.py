"""Imputers for missing modalities and their evaluation.

``config`` (the ``impute`` settings), ``base`` (the :class:`Imputer` interface), ``simple``,
``local``, ``generator`` and ``diffusion`` (the imputers), ``registry`` (by name),
``latent`` and ``moments`` (federated fitting), ``clients`` (client data and test-sample
owners), ``evaluate`` and ``report`` (the evaluation and its artifact). Import from the
submodules: this package imports nothing, so ``fedmm.config`` can use ``impute.config``.
"""
