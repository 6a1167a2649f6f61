"""The client side: local training under a strategy's objective, returning its payload."""

from __future__ import annotations

import torch

from fedmm.fl.strategy import ClientUpdate, State, Strategy, TrainInstruction
from fedmm.fl.tensors import TensorData
from fedmm.seeding import torch_generator

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def trainable_state(model: torch.nn.Module) -> State:
    """A detached copy of the model's floating-point state (parameters and float buffers)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items() if value.is_floating_point()}


def run_epochs(
    model: torch.nn.Module,
    data: TensorData,
    loss_fn,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator_keys: tuple,
    seed: int,
) -> dict[str, float]:
    """Train for some epochs over seeded shuffles; returns mean loss and accuracy of the last epoch."""
    model.train()
    for epoch in range(epochs):
        generator = torch_generator(seed, *generator_keys, epoch)
        loss_sum = torch.zeros((), device=data.labels.device)
        correct = torch.zeros((), device=data.labels.device)
        for batch in data.batches(batch_size, generator):
            logits = model(batch.inputs, batch.mask)
            loss = loss_fn(batch, logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            correct += (logits.detach().argmax(1) == batch.labels).sum()
    return {"train_loss": float(loss_sum / len(data)), "train_accuracy": float(correct / len(data))}


def train_client(
    model: torch.nn.Module,
    global_state: State,
    data: TensorData,
    instruction: TrainInstruction,
    strategy: Strategy,
    seed: int,
) -> ClientUpdate:
    """Load the global state into ``model``, train locally, and return the delta payload."""
    model.load_state_dict(global_state)
    optimizer = OPTIMIZERS[instruction.optimizer](model.parameters(), lr=instruction.lr)
    metrics = run_epochs(
        model,
        data,
        lambda batch, logits: strategy.local_loss(model, batch, logits, global_state),
        instruction.local_epochs,
        instruction.batch_size,
        optimizer,
        ("local", instruction.server_round, instruction.client_id),
        seed,
    )
    trained = trainable_state(model)
    delta = {name: trained[name] - global_state[name] for name in global_state}
    return ClientUpdate(client_id=instruction.client_id, num_examples=len(data), delta=delta, metrics=metrics)
