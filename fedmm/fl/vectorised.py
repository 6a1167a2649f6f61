"""Vectorised client training: a round's clients trained together with :mod:`torch.func`.

Clients that take the same number of local steps (and share their local settings) form a
group. A group's parameters and optimizer state are stacked, one row per client, and each
local step runs ``vmap(grad(loss))`` over the stack (``functional_call`` of the shared
network), then the optimizer's elementwise update over the whole stack at once. Each
client's batches are the loop's: the same seeded shuffle, the same batch boundaries. A call
takes a slice of the group's clients, largest first, as wide as the slice's longest batch of
that step; a client whose batch is shorter is padded with unlabelled rows that
``Forward.real`` marks, so its loss, gradient and metrics are its own. Every client starts
from the global state, so the first step runs the shared network unbatched (one ordinary
forward over the slice's samples; only the gradients are per client). The result is the
loop's arithmetic up to floating-point rounding.

Only strategies whose client side is FedAvg's local training over
:meth:`~fedmm.fl.strategy.FedAvg.client_loss` vectorise
(:meth:`~fedmm.fl.strategy.Strategy.vectorisable`); others, clients whose update is
corrupted, and clients without data train in the loop.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import grad, vmap

from fedmm.fl.client import StateCall, forward
from fedmm.fl.engine import InProcessClients, RoundReplies
from fedmm.fl.messages import ClientUpdate, LocalContext, TrainInstruction
from fedmm.fl.strategy import Strategy
from fedmm.fl.updates import StackedStates, stacked_entries
from fedmm.seeding import torch_generator
from fedmm.tensors import UNLABELLED, State, TensorData

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the loop uses
SAMPLES_PER_CALL = 384
"""On CPU, clients per vmapped call are capped so a call sees about this many samples: activations of a
larger batch leave the cache (one call over 1,000 clients of 3 samples ran 1.8x slower than chunks of 128)."""


@dataclass
class Group:
    """Clients trained together: same local settings and the same number of steps per epoch."""

    instructions: list[TrainInstruction]
    steps_per_epoch: int

    @property
    def ids(self) -> list[int]:
        return [ins.client_id for ins in self.instructions]


class StackedOptimizer:
    """torch's Adam or SGD (default settings, as the loop builds them) applied elementwise to stacked parameters.

    Every client's first step starts from the global state, so it writes its rows from ``start``
    (the global parameters) and the stack needs no copy of them beforehand.
    """

    def __init__(self, name: str, lr: float, params: State, steps: int) -> None:
        self.name, self.lr, self.step_count = name, lr, 0
        self.exp_avg = self.exp_avg_sq = None  # a single step needs no moments: see :meth:`first_adam_step`
        if name == "adam" and steps > 1:
            self.exp_avg = {k: torch.empty_like(v) for k, v in params.items()}
            self.exp_avg_sq = {k: torch.empty_like(v) for k, v in params.items()}

    def next_step(self) -> None:
        """Start the next step (Adam's bias corrections count steps); then :meth:`update` every slice of clients."""
        self.step_count += 1

    @torch.no_grad()
    def update(self, params: State, grads: State, clients: slice, start: State) -> None:
        """This step's update of the ``clients`` rows of every stacked parameter (``grads`` holds those rows only),
        in the operations of ``torch.optim``'s single-tensor path; on the first step from ``start``."""
        for name, param in params.items():
            rows, g = param[clients], grads[name]
            if self.name == "sgd" and self.step_count == 1:
                torch.add(start[name], g, alpha=-self.lr, out=rows)
            elif self.name == "sgd":
                rows.add_(g, alpha=-self.lr)
            elif self.step_count == 1:
                self.first_adam_step(name, rows, g, clients, start[name])
            else:
                self.adam_step(rows, g, self.exp_avg[name][clients], self.exp_avg_sq[name][clients])

    def first_adam_step(self, name: str, rows: torch.Tensor, g: torch.Tensor, clients: slice,
                        start: torch.Tensor) -> None:
        """Adam's first step from zero moments: its bias corrections cancel, so ``m / (1 - beta1) = g`` and
        ``sqrt(v / (1 - beta2)) = |g|`` and the step is ``lr * g / (|g| + eps)`` (torch's up to rounding)."""
        beta1, beta2 = ADAM_BETAS
        if self.exp_avg is not None:
            torch.mul(g, 1 - beta1, out=self.exp_avg[name][clients])
            torch.mul(g, g, out=self.exp_avg_sq[name][clients]).mul_(1 - beta2)
        torch.addcdiv(start, g, g.abs().add_(ADAM_EPS), value=-self.lr, out=rows)

    def adam_step(self, param: torch.Tensor, g: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> None:
        beta1, beta2 = ADAM_BETAS
        step_size = self.lr / (1 - beta1**self.step_count)
        correction2_sqrt = (1 - beta2**self.step_count) ** 0.5
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(ADAM_EPS)
        param.addcdiv_(exp_avg, denom, value=-step_size)


class VectorisedClients(InProcessClients):
    """In-process clients whose local training runs vectorised where the strategy allows it (else as the loop)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        model = self.worker.model
        self.parameter_names = [name for name, _ in model.named_parameters()]
        self.buffers = {name: b for name, b in model.named_buffers() if b.is_floating_point()}
        self.pooled = TensorData.concat(self.clients)
        self.sizes = [len(c) for c in self.clients]
        self.offsets = torch.cumsum(torch.tensor([0] + self.sizes), 0)[:-1].tolist()
        self.call_forward = StateCall(model, forward)
        self.call_represent = StateCall(model, type(model).represent)

    def fit_round(
        self, server_round: int, state: State, instructions: list[TrainInstruction], strategy: Strategy
    ) -> RoundReplies:
        if not strategy.vectorisable():
            return super().fit_round(server_round, state, instructions, strategy)
        looped = [ins for ins in instructions if not self.vectorises(ins)]
        payloads = {u.client_id: u for u in super().fit_round(server_round, state, looped, strategy).payloads}
        for group in self.groups([ins for ins in instructions if self.vectorises(ins)]):
            payloads.update(self.fit_group(group, state, strategy))
        return RoundReplies([payloads[ins.client_id] for ins in instructions])

    def vectorises(self, ins: TrainInstruction) -> bool:
        """Whether this client trains vectorised: it has data and its update is not tampered with."""
        tampered = self.corruption is not None and self.corruption.tampers_update(ins.client_id)
        return self.sizes[ins.client_id] > 0 and not tampered

    def groups(self, instructions: list[TrainInstruction]) -> list[Group]:
        """The instructions grouped by local settings and steps per epoch, each group's clients largest first (so a
        slice of them pads its short batches to few slots)."""
        grouped: dict[tuple, list[TrainInstruction]] = defaultdict(list)
        for ins in sorted(instructions, key=lambda ins: -self.sizes[ins.client_id]):
            steps = math.ceil(self.sizes[ins.client_id] / ins.batch_size)
            grouped[(ins.optimizer, ins.lr, ins.local_epochs, ins.batch_size, steps)].append(ins)
        return [Group(members, key[-1]) for key, members in grouped.items()]

    def batch_rows(self, group: Group, seed_keys: Callable[[TrainInstruction, int], tuple]) -> torch.Tensor:
        """Rows of the pooled data per (epoch, step, client, slot), -1 for padding: each client's seeded batches.

        A client's batches are consecutive slices of its shuffle and only its last may be short, so an
        epoch's shuffle fills that client's first slots in order: one scatter per epoch for the group.
        """
        first, count = group.instructions[0], len(group.ids)
        width = min(first.batch_size, max(self.sizes[c] for c in group.ids))
        slots = group.steps_per_epoch * width
        sizes = torch.tensor([self.sizes[c] for c in group.ids])
        shift = torch.arange(count) * slots - (torch.cumsum(sizes, 0) - sizes)  # a client's first slot less its start
        positions = torch.arange(int(sizes.sum())) + torch.repeat_interleave(shift, sizes)
        offsets = torch.repeat_interleave(torch.tensor([self.offsets[c] for c in group.ids]), sizes)
        rows = torch.full((first.local_epochs, count * slots), -1, dtype=torch.long)
        for epoch in range(first.local_epochs):
            shuffles = [torch.randperm(self.sizes[ins.client_id], generator=torch_generator(*seed_keys(ins, epoch)))
                        for ins in group.instructions]
            rows[epoch, positions] = torch.cat(shuffles) + offsets
        return rows.view(first.local_epochs, count, group.steps_per_epoch, width).permute(0, 2, 1, 3)

    def stacked_kept(self, group: Group, state: State) -> tuple[State | None, torch.Tensor]:
        """What the group's clients kept, stacked (the global state where a client kept nothing), and who kept it."""
        has = torch.tensor([float(c in self.kept) for c in group.ids], device=self.device)
        if not has.any():
            return None, has
        return stacked_entries([self.kept.get(c, state) for c in group.ids], list(state)), has

    def fit_group(self, group: Group, state: State, strategy: Strategy) -> dict[int, ClientUpdate]:
        """Train one group together; the clients' payloads (FedAvg's :func:`train_client` payload) by id."""
        trained, loss_sum, correct = self.train_group(group, state, strategy)
        return self.group_payloads(group, state, trained, loss_sum, correct, strategy)

    def train_group(
        self, group: Group, state: State, strategy: Strategy
    ) -> tuple[StackedStates, torch.Tensor, torch.Tensor]:
        """The group's trained states (one row per client, in ``state``'s layout), and per client the last
        epoch's summed loss and correct count."""
        first, count = group.instructions[0], len(group.ids)
        trained = StackedStates.allocate(count, state)
        for name, value in state.items():
            if name not in self.parameter_names:  # parameters: the first step writes them (StackedOptimizer.update)
                trained.column(name).copy_(value.reshape(1, -1).expand(count, -1))
        params = {name: trained.column(name).view(count, *state[name].shape) for name in self.parameter_names}
        start = {name: state[name] for name in self.parameter_names}
        optimizer = StackedOptimizer(first.optimizer, first.lr, params, first.local_epochs * group.steps_per_epoch)
        kept, has_kept = self.stacked_kept(group, state)
        rows = self.batch_rows(
            group, lambda ins, epoch: (strategy.seed, "local", ins.server_round, ins.client_id, epoch)
        )
        filled = (rows >= 0).sum(-1)  # per epoch, step and client: its real rows (the rest is padding)
        widths, filled, rows = filled.tolist(), filled.to(self.device), rows.to(self.device)
        chunk = max(1, SAMPLES_PER_CALL // rows.shape[-1]) if self.device == "cpu" else count
        loss = grad(self.client_loss(strategy, state), has_aux=True)
        kept_dim = 0 if kept else None
        shared_step = vmap(loss, in_dims=(None, kept_dim, 0, 0))  # the global parameters, the same for every client
        own_step = vmap(loss, in_dims=(0, kept_dim, 0, 0))
        for epoch in range(first.local_epochs):
            loss_sum = torch.zeros(count, device=self.device)
            correct = torch.zeros(count, device=self.device)
            for step_index, index in enumerate(rows[epoch]):
                optimizer.next_step()
                from_start = optimizer.step_count == 1  # every client still holds the global parameters
                for lo in range(0, count, chunk):  # each slice's gradients are used and freed at once
                    part = slice(lo, lo + chunk)
                    width = max(widths[epoch][step_index][part])
                    grads, (loss_value, hits) = (shared_step if from_start else own_step)(
                        start if from_start else {k: v[part] for k, v in params.items()},
                        None if kept is None else {k: v[part] for k, v in kept.items()},
                        has_kept[part], self.batch(index[part, :width]),
                    )
                    optimizer.update(params, grads, part, start)
                    loss_sum[part] += loss_value.detach() * filled[epoch, step_index, part]
                    correct[part] += hits
        return trained, loss_sum, correct

    def batch(self, index: torch.Tensor) -> tuple:
        """The stacked batch at pooled rows ``index`` (clients, slots); padding rows unlabelled and not real."""
        real = index >= 0
        rows = index.clamp(min=0)
        inputs = {name: value[rows] for name, value in self.pooled.inputs.items()}
        labels = torch.where(real, self.pooled.labels[rows], UNLABELLED)
        return inputs, self.pooled.mask[rows], labels, real.to(torch.float32)

    def client_loss(self, strategy: Strategy, global_state: State) -> Callable:
        """One client's loss of one batch as a function of its parameters (what ``grad`` differentiates)."""
        buffers, call_forward, call_represent = self.buffers, self.call_forward, self.call_represent

        def loss(params: State, kept: State | None, has_kept: torch.Tensor, batch: tuple):
            inputs, mask, labels, real = batch
            out = call_forward.with_state({**params, **buffers}, TensorData(inputs, mask, labels), real)
            context = LocalContext(params, global_state, call_represent.with_state, kept, has_kept)
            value = strategy.client_loss(out, context)
            return value, (value, (out.logits.argmax(1) == labels).sum())

        return loss

    def group_payloads(
        self, group: Group, state: State, trained: StackedStates, loss_sum: torch.Tensor, correct: torch.Tensor,
        strategy: Strategy,
    ) -> dict[int, ClientUpdate]:
        """Each client's delta and last-epoch metrics, and what it keeps, as :func:`train_client` makes them."""
        sizes = torch.tensor([self.sizes[c] for c in group.ids], device=self.device)
        labelled = torch.tensor([int(self.clients[c].labelled.sum()) for c in group.ids], device=self.device)
        losses, accuracies = (loss_sum / sizes).tolist(), (correct / labelled.clamp(min=1)).tolist()
        kept = [None] * len(group.ids)
        if type(strategy).keep is not Strategy.keep:  # a client's trained state is a row of the stack (buffers: the global's)
            kept = [strategy.keep(trained.row(column)) for column in range(len(group.ids))]
        deltas = self.delta_stack(trained, state, in_place=all(k is None for k in kept))
        updates = {}
        for column, ins in enumerate(group.instructions):
            metrics = {"train_loss": losses[column], "train_accuracy": accuracies[column]}
            size = self.sizes[ins.client_id]
            updates[ins.client_id] = ClientUpdate(ins.client_id, size, deltas.row(column), metrics)
            if kept[column] is not None:
                self.kept[ins.client_id] = kept[column]
        return updates

    def delta_stack(self, trained: StackedStates, state: State, in_place: bool) -> StackedStates:
        """The ``trained`` states minus the global ``state`` (zero where it holds no parameter); ``in_place``
        where nothing else refers to ``trained``."""
        deltas = trained if in_place else StackedStates.allocate(trained.matrix.shape[0], state)
        for name in state:
            if name in self.parameter_names:
                torch.sub(trained.column(name), state[name].reshape(1, -1), out=deltas.column(name))
            else:
                deltas.column(name).zero_()
        return deltas


def client_pool(engine: str, *args, **kwargs) -> InProcessClients:
    """The in-process clients of ``train.engine`` (``auto`` is ``vmap``), built from :class:`InProcessClients`' arguments."""
    return (InProcessClients if engine == "loop" else VectorisedClients)(*args, **kwargs)
