"""Imputers for missing modalities and their evaluation.

``base`` (the :class:`Imputer` interface), ``simple``, ``local``, ``generator`` and
``diffusion`` (the imputers), ``registry`` (by name), ``latent`` (federated fitting over
:mod:`fedmm.moments`), ``clients`` (client data and test-sample owners), ``evaluate`` and
``report`` (the evaluation and its artifact). Their settings are the leaf
:mod:`fedmm.impute_config` (the config's ``impute`` section), so neither ``fedmm.config`` nor a
Flower site loads this package. Import from the submodules: this package imports nothing.
"""
