"""Federated multimodal knowledge-graph completion (FedMKGC): data, federation, models, training, evaluation."""
