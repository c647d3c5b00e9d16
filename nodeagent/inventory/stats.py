"""What the inventory service counts as it works: heartbeats, enrolments, join jobs,
reconciler actions, database transactions.

The RPC handlers, the join runner's threads and the store's worker threads all call in
here, so every method takes one lock and does one addition: cheap enough for a thousand
heartbeats a second. The Prometheus collector (metrics.py) reads a copy through
`snapshot()`; the counters keep nothing prometheus_client-specific so that a caller
(the Kubernetes reconciler) needs no metrics library to count.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

# Upper bounds (seconds) of the transaction-duration histogram: from an in-memory SQLite
# commit (well under a millisecond) to a PostgreSQL failover stall.
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ENROLMENT_RESULTS = ("succeeded", "failed")
JOIN_RESULTS = ("succeeded", "failed", "cancelled")


@dataclass
class StatsSnapshot:
    """A consistent copy of the counters, for one scrape."""

    heartbeats: int = 0
    enrolments: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENROLMENT_RESULTS, 0))
    joins: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOIN_RESULTS, 0))
    reconciler: dict[tuple[str, str], int] = field(default_factory=dict)
    # transactions per bucket of DB_BUCKETS, not cumulative; the last is above the largest
    db_buckets: list[int] = field(default_factory=lambda: [0] * (len(DB_BUCKETS) + 1))
    db_seconds: float = 0.0
    db_errors: int = 0


class ServiceStats:
    """The service's counters; `service.stats`. Counters only ever grow (Prometheus
    derives rates), and every labelled series exists from the start at zero so that a
    first failure shows as an increase."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._s = StatsSnapshot()

    def heartbeat(self) -> None:
        with self._lock:
            self._s.heartbeats += 1

    def enrolment(self, ok: bool) -> None:
        with self._lock:
            self._s.enrolments["succeeded" if ok else "failed"] += 1

    def join_finished(self, result: str) -> None:
        """`result`: how the job ended, "succeeded", "failed" or "cancelled"."""
        with self._lock:
            self._s.joins[result] = self._s.joins.get(result, 0) + 1

    def reconciler_action(self, action: str, result: str) -> None:
        """One action of the Kubernetes reconciler (`action`: what it did, `result`: how it
        went), for `nodeagent_inventory_reconciler_actions_total{action, result}`."""
        with self._lock:
            key = (action, result)
            self._s.reconciler[key] = self._s.reconciler.get(key, 0) + 1

    def db_latency(self, seconds: float) -> None:
        with self._lock:
            self._s.db_buckets[bisect.bisect_left(DB_BUCKETS, seconds)] += 1
            self._s.db_seconds += seconds

    def db_error(self) -> None:
        with self._lock:
            self._s.db_errors += 1

    def transaction(self, seconds: float, failed: bool) -> None:
        """The store's hook (`Store.on_tx`): every transaction's duration, and its failure."""
        self.db_latency(seconds)
        if failed:
            self.db_error()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            s = self._s
            return StatsSnapshot(
                heartbeats=s.heartbeats,
                enrolments=dict(s.enrolments),
                joins=dict(s.joins),
                reconciler=dict(s.reconciler),
                db_buckets=list(s.db_buckets),
                db_seconds=s.db_seconds,
                db_errors=s.db_errors,
            )
