"""Live viewers across crashes: a seq a viewer was shown names that one event forever.

The server is SIGKILLed five times under a viewer that reconnects with ?after=<last seq it saw>. Had
the viewer been shown events not yet committed, the restarted server would number new events from the
last committed seq and give the viewer's seqs to other results: rows lost and rows doubled.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import websocket

KILLS = 5
URLS = 400


class ReconnectingViewer:
    """A websocket viewer of one batch that reconnects to whichever server is current, resuming after its last seq."""

    def __init__(self, batch_id: str):
        self.batch_id = batch_id
        self.base_url = ""
        self.events: list[dict] = []
        self.ended = threading.Event()
        self.stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, base_url: str) -> ReconnectingViewer:
        self.base_url = base_url
        self._thread.start()
        return self

    def switch(self, base_url: str) -> None:
        """The server was restarted at another port."""
        self.connected.clear()
        self.base_url = base_url

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    def results_seen(self) -> int:
        return sum(1 for event in self.events if event["type"] == "result")

    def _run(self) -> None:
        while not (self.stop.is_set() or self.ended.is_set()):
            url = f"ws{self.base_url[4:]}/ws/batches/{self.batch_id}?after={self.last_seq}"
            try:
                connection = websocket.create_connection(url, timeout=5)
            except (OSError, websocket.WebSocketException):
                time.sleep(0.05)
                continue
            self.connected.set()
            try:
                while True:
                    message = json.loads(connection.recv())
                    if message["type"] == "events":
                        self.events.extend(message["events"])
                    elif message["type"] == "end":
                        self.ended.set()
                        return
            except (OSError, websocket.WebSocketException, ValueError):
                pass  # killed server: reconnect
            finally:
                connection.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def stored_events(data_dir, batch_id) -> dict[int, tuple[str, str]]:
    """seq -> (type, payload JSON) straight from the SQLite file."""
    with sqlite3.connect(data_dir / "greenbatch.db") as conn:
        return {
            seq: (type_, data)
            for seq, type_, data in conn.execute("SELECT seq, type, data FROM events WHERE batch_id = ?", (batch_id,))
        }


def test_five_sigkills_under_a_reconnecting_viewer_lose_no_row_double_none_and_reuse_no_seq(
    make_server, target, tmp_path
):
    data = tmp_path / "crash"
    # A long flush interval keeps many events uncommitted at each kill: the window a viewer must never see into.
    env = {"GREENBATCH_FLUSH_INTERVAL": "0.5"}
    server = make_server(data_dir=data, env=env)
    batch = server.submit([target.url(f"/delay/40?n={i}") for i in range(URLS)], concurrency=8)
    viewer = ReconnectingViewer(batch["id"]).start(server.base_url)
    try:
        for _ in range(KILLS):
            seen = viewer.results_seen()
            deadline = time.monotonic() + 20
            while viewer.results_seen() < seen + 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            server.kill()
            server = make_server(data_dir=data, env=env)
            viewer.switch(server.base_url)
        assert viewer.ended.wait(60), f"the viewer never got `end`; it saw up to seq {viewer.last_seq}"
    finally:
        viewer.stop.set()
        viewer.join(10)

    seqs = [event["seq"] for event in viewer.events]
    stored = stored_events(data, batch["id"])
    assert seqs == list(range(1, len(seqs) + 1)), "every seq once, in order, no gap"
    assert sorted(stored) == seqs, "the viewer saw exactly the stored events"
    for event in viewer.events:
        type_, data_json = stored[event["seq"]]
        assert (type_, json.loads(data_json)) == (event["type"], event["data"]), (
            f"seq {event['seq']} was shown as one event and stored as another"
        )
    indexes = [event["data"]["index"] for event in viewer.events if event["type"] == "result"]
    assert sorted(indexes) == list(range(URLS)), "each URL's row shown exactly once"
