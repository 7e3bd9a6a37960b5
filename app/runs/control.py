"""What the web needs from whoever runs batches and carries their events: the engine and its event bus in one
process, the cluster's stand-ins (app/cluster) across many."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.options import BatchOptions
from ..fetch import guard
from .events import Listener

if TYPE_CHECKING:
    from .engine import InFlight, LiveState
    from .hosts import Counters, HostLive


class BatchControl(Protocol):
    """Starts, cancels and reports on batches (app.runs.engine.Engine, app.cluster.control.ClusterControl)."""

    policy: guard.Policy  # the fetch policy the API judges submitted URLs by

    def submit(
        self,
        urls: Sequence[str],
        options: BatchOptions,
        name: str = "",
        parent_id: str | None = None,
        source: dict[str, Any] | None = None,
        list_id: str | None = None,
        batch_id: str | None = None,
    ) -> str: ...
    def cancel(self, batch_id: str) -> bool: ...
    def live(self, batch_id: str) -> LiveState | None: ...
    def is_live(self, batch_id: str) -> bool: ...
    def running_urls(self, batch_id: str, limit: int = ...) -> tuple[list[InFlight], int]: ...
    def inflight(self) -> int: ...
    def hosts_live(self, batch_id: str) -> dict[str, HostLive]: ...

    counters: Counters  # host pauses and retries by status, of the batches this process fetches (/metrics)

    def wait_released(self, batch_id: str, timeout: float) -> None: ...
    def resume_unfinished(self) -> int: ...
    def stop_now(self) -> None: ...
    def shutdown(self, grace: float = 5.0) -> None: ...


class EventFeed(Protocol):
    """Hands committed events to viewers (app.runs.events.EventBus, app.cluster.streams.Follower)."""

    def subscribe(self, batch_id: str | None, listener: Listener) -> Callable[[], None]: ...
    def tap(self, listener: Listener) -> None: ...
