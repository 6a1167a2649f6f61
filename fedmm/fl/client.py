"""The client side: local training under a strategy's objective, returning its payload."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedmm.fl.messages import ClientUpdate, Forward, LocalLoss, TrainInstruction
from fedmm.seeding import torch_generator
from fedmm.tensors import State, TensorData

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def trainable_state(model: torch.nn.Module) -> State:
    """A detached copy of the model's floating-point state (parameters and float buffers)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items() if value.is_floating_point()}


class Worker:
    """The model every simulated client trains in turn.

    It keeps references to the model's floating-point state tensors (so wrap the model once
    it is on its device), and loading a global state and reading the trained one back are
    plain tensor copies, without walking the module tree once per client.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._tensors = {
            name: value for name, value in model.state_dict(keep_vars=True).items() if value.is_floating_point()
        }

    @torch.no_grad()
    def load(self, state: State) -> None:
        for name, tensor in self._tensors.items():
            tensor.copy_(state[name])

    def state(self) -> State:
        """A detached copy of the current floating-point state (as :func:`trainable_state`)."""
        return {name: tensor.detach().clone() for name, tensor in self._tensors.items()}


def forward(model: torch.nn.Module, batch: TensorData, real: torch.Tensor | None = None) -> Forward:
    """Run a batch through the model, keeping the embeddings and fused representation."""
    embeddings = model.embed(batch.inputs, batch.mask)
    representation = model.fuse(embeddings, batch.mask)
    return Forward(batch, embeddings, representation, model.head(representation), real)


class StateCall(torch.nn.Module):
    """``function(model, *args)`` as a module's forward, so :func:`torch.func.functional_call` can run it."""

    def __init__(self, model: torch.nn.Module, function: Callable) -> None:
        super().__init__()
        self.model, self.function = model, function

    def forward(self, *args):
        return self.function(self.model, *args)

    def with_state(self, state: State, *args):
        """The method's result with the model's tensors replaced by ``state`` (the model itself unchanged)."""
        return torch.func.functional_call(self, {f"model.{name}": value for name, value in state.items()}, args)


def representer(model: torch.nn.Module) -> Callable[[State, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """``represent(state, inputs, mask)``: the fused representation of ``model`` holding ``state``."""
    return StateCall(model, type(model).represent).with_state


def run_epochs(
    model: torch.nn.Module,
    data: TensorData,
    loss_fn: LocalLoss,
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
            out = forward(model, batch)
            loss = loss_fn(out)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            correct += (out.logits.detach().argmax(1) == batch.labels).sum()
    labelled = max(int(data.labelled.sum()), 1)
    return {"train_loss": float(loss_sum / len(data)), "train_accuracy": float(correct / labelled)}


def train_client(
    worker: Worker,
    global_state: State,
    data: TensorData,
    instruction: TrainInstruction,
    loss_fn: LocalLoss,
    keep: Callable[[State], State | None],
    seed: int,
) -> tuple[ClientUpdate, State | None]:
    """Train the worker (already holding ``global_state``) under ``loss_fn``.

    Returns the delta payload and what the client keeps.
    """
    model = worker.model
    optimizer = OPTIMIZERS[instruction.optimizer](model.parameters(), lr=instruction.lr)
    metrics = run_epochs(
        model,
        data,
        loss_fn,
        instruction.local_epochs,
        instruction.batch_size,
        optimizer,
        ("local", instruction.server_round, instruction.client_id),
        seed,
    )
    trained = worker.state()
    delta = {name: trained[name] - global_state[name] for name in global_state}
    update = ClientUpdate(client_id=instruction.client_id, num_examples=len(data), delta=delta, metrics=metrics)
    return update, keep(trained)
