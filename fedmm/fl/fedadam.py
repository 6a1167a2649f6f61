"""FedAdam (FedOpt, Reddi et al. 2021): the server applies Adam to the negated mean client delta."""

from __future__ import annotations

import torch

from fedmm.config import TrainConfig
from fedmm.fl.messages import ClientUpdate
from fedmm.fl.params.fedadam import FEDADAM
from fedmm.fl.strategy import FedAvg, ServerContext
from fedmm.tensors import State

MOMENTS = ("exp_avg", "exp_avg_sq")


class FedAdam(FedAvg[ClientUpdate]):
    """FedAvg's clients; the server treats minus the example-weighted mean delta as a gradient for Adam.

    Parameters (config: ``train.fedadam``): server learning rate ``server_lr`` (> 0), ``beta1``
    and ``beta2`` (in [0, 1)) and the adaptivity ``tau`` (Adam's eps, > 0). The server is
    ``torch.optim.Adam`` over every floating-point state entry, so unlike the paper's
    Algorithm 2 its moments are bias-corrected. Its moments and step count are the strategy's server state
    (checkpointed, so a resumed run continues the same optimiser).
    """

    info = FEDADAM

    def __init__(
        self, train: TrainConfig, seed: int, server: ServerContext | None = None, *, server_lr: float, beta1: float,
        beta2: float, tau: float,
    ) -> None:
        super().__init__(train, seed, server)
        self.config = self.checked(server_lr=server_lr, beta1=beta1, beta2=beta2, tau=tau)
        self.params: dict[str, torch.nn.Parameter] = {}
        self.optimizer: torch.optim.Adam | None = None
        self._restored: State = {}

    def _optimizer(self, global_state: State) -> torch.optim.Adam:
        if self.optimizer is None:
            c = self.config
            self.params = {name: torch.nn.Parameter(value.detach().clone()) for name, value in global_state.items()}
            self.optimizer = torch.optim.Adam(
                self.params.values(), lr=c.server_lr, betas=(c.beta1, c.beta2), eps=c.tau
            )
            if self._restored:
                for name, param in self.params.items():
                    self.optimizer.state[param] = {
                        "step": self._restored["step"].clone().cpu(),
                        **{m: self._restored[f"{m}/{name}"].clone() for m in MOMENTS},
                    }
        return self.optimizer

    def aggregate_train(self, server_round: int, global_state: State, updates: list[ClientUpdate]) -> State:
        delta = self.mean_delta(server_round, updates)
        optimizer = self._optimizer(global_state)
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(global_state[name])
                param.grad = -delta[name] if name in delta else torch.zeros_like(param)
        optimizer.step()
        return {name: param.detach().clone() for name, param in self.params.items()}

    def server_state(self) -> State:
        if self.optimizer is None or not self.optimizer.state:
            return {}
        states = {name: self.optimizer.state[param] for name, param in self.params.items()}
        first = next(iter(states.values()))
        return {"step": torch.as_tensor(first["step"]).clone(),
                **{f"{m}/{name}": s[m].clone() for name, s in states.items() for m in MOMENTS}}

    def load_server_state(self, state: State) -> None:
        self._restored, self.optimizer = dict(state), None
