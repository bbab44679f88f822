"""Per-process socket state: the registry, the replay guard and the expiry sweeper."""

from __future__ import annotations

from dataclasses import dataclass

from utils.delivery import ReplayGuard
from utils.sessions import ExpirySweeper, SocketRegistry


@dataclass
class Realtime:
    KEY = "notifier.realtime"

    registry: SocketRegistry
    guard: ReplayGuard
    sweeper: ExpirySweeper

    def forget(self, sid: str) -> None:
        self.registry.remove(sid)
        self.guard.forget(sid)
