"""FedMMKT (He et al. 2025), offline and small: a server text-to-image diffusion model and client task models that improve each other."""
