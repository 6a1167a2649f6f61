"""Polling with backoff: fast right after something arrived, slower the longer nothing does."""

from __future__ import annotations

import time


class Backoff:
    """Sleeps ``first`` seconds, then twice as long each time nothing arrived, up to ``most``."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self.delay = first

    def wait(self) -> None:
        time.sleep(self.delay)
        self.delay = min(2 * self.delay, self.most)

    def reset(self) -> None:
        self.delay = self.first
