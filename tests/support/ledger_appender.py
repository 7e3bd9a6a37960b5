"""One process appending results to a batch through the Ledger, as a worker's writer would (tests/test_ledger.py).

    python -m tests.support.ledger_appender DATABASE_URL BATCH_ID SEED GROUP INDEX...

Connects, prints "ready" and waits for a line on stdin (so that every process appends at once), then
appends a result for each INDEX, in a shuffled order, GROUP at a time; prints the (seq, type) of every
event the ledger said it committed, as one JSON list.
"""

from __future__ import annotations

import json
import random
import sys

from app.cluster.ledger import Ledger
from app.core import stats
from app.core.jsonutil import compact_json
from app.core.results import ErrorKind, Result


def fetched(index: int, rng: random.Random) -> tuple[int, str, stats.Row]:
    """A result as a worker's fetch may end URL `index`: mostly ok, some refused or with a bad status."""
    shape = rng.random()
    result = Result(index=index, url=f"http://h{index % 7}.test/{index}", started_at="2026-01-01T00:00:00.000Z")
    result.finished_at = result.started_at
    result.attempts = 1
    result.timings = {"total": round(rng.lognormvariate(3, 1), 3), "ttfb": None}
    if shape < 0.7:
        result.ok, result.status_code, result.bytes = True, 200, rng.randrange(1, 5000)
    elif shape < 0.85:
        result.status_code = 503
        result.error = {"kind": ErrorKind.STATUS.value, "message": "status 503 is not accepted"}
    else:
        result.error = {"kind": ErrorKind.REFUSED.value, "message": "connection refused"}
    data = result.to_dict()
    return index, compact_json(data), stats.row_of(data)


def main(argv: list[str]) -> None:
    """Append the results, then print the events committed."""
    database_url, batch_id, seed, group, *indexes = argv
    rng = random.Random(int(seed))
    order = [int(index) for index in indexes]
    rng.shuffle(order)
    results = [fetched(index, rng) for index in order]
    ledger = Ledger(database_url, max_connections=1)
    committed = []
    print("ready", flush=True)
    sys.stdin.readline()
    size = int(group)
    for start in range(0, len(results), size):
        committed += [(event.seq, event.type) for event in ledger.append(batch_id, results[start : start + size])]
    ledger.close()
    print(json.dumps(committed))


if __name__ == "__main__":
    main(sys.argv[1:])
