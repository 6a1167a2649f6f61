"""Progress for a terminal: one bar per long phase (rounds, audit rounds, centralized epochs)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from fedmm.fl.history import RoundRecord


class RoundProgress:
    """A tqdm bar over rounds (or epochs); ``update(record)`` is the engine's ``on_round`` callback."""

    def __init__(self, rounds: int, label: str, unit: str = "round") -> None:
        self.rounds, self.label, self.unit = rounds, label, unit
        self.bar: tqdm | None = None

    def __enter__(self) -> RoundProgress:
        self.bar = tqdm(total=self.rounds, desc=self.label, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
        return self

    def update(self, record: RoundRecord) -> None:
        assert self.bar is not None
        self.bar.n = record.round
        nan = float("nan")
        self.bar.set_postfix(
            val_acc=f"{record.score('val', 'accuracy', nan):.3f}",
            val_f1=f"{record.score('val', 'macro_f1', nan):.3f}",
            refresh=False,
        )
        self.bar.refresh()

    def step(self, record: dict | None = None) -> None:
        """Advance by one (for callbacks whose records carry no global metrics: audit rounds, epochs)."""
        assert self.bar is not None
        self.bar.update()

    def reach(self, done: int) -> None:
        """Show ``done`` of the total (for progress counted elsewhere, e.g. in another process)."""
        assert self.bar is not None
        if done != self.bar.n:
            self.bar.n = done
            self.bar.refresh()

    def __exit__(self, *exc) -> None:
        assert self.bar is not None
        self.bar.close()
