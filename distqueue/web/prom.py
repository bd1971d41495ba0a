"""The Prometheus exposition of one server: counters and histograms from the
service's Metrics, gauges from the shared snapshot (never a count of the jobs table).

Which series to aggregate how across several servers on one store is in
docs/observability.md: this server's own counters ``sum()``, the store-wide gauges
and totals (the same in every server) ``max()``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from distqueue._version import __version__
from distqueue.jobs import JobState
from distqueue.service.metrics import BEYOND, PRIORITY_LABELS, Histogram, priority_label

if TYPE_CHECKING:
    from distqueue.server.server import Server
    from distqueue.web.snapshot import Snapshot

__all__ = ["exposition"]

PRIORITIES = list(PRIORITY_LABELS)


def _order(key: str) -> tuple[int, str]:
    """Priorities in numeric order (">10" after 10), other labels by name after them."""
    if key.isdigit():
        return (int(key), "")
    return (11, key) if key == BEYOND else (1 << 30, key)


def _counter(name: str, doc: str, values: dict[str, int], label: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items(), key=lambda kv: _order(kv[0])):
        family.add_metric([key], value)
    return family


def _by_priority(name: str, doc: str, values: dict[str, int]) -> CounterMetricFamily:
    # every priority present, zeros included: a series does not appear mid-way
    return _counter(name, doc, {p: 0 for p in PRIORITIES} | values, "priority")


def _histogram(name: str, doc: str, table: dict[str, Histogram], label: str) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, hist in sorted(table.items(), key=lambda kv: _order(kv[0])):
        buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in hist.cumulative()]
        family.add_metric([key], buckets, hist.sum)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class ServerCollector(Collector):
    def __init__(self, server: Server, snapshot: Snapshot) -> None:
        self.server = server
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        service = self.server.service
        m = service.metrics
        yield from (
            _by_priority("distqueue_tasks_submitted", "Jobs created by this server's SUBMITs.",
                         m.submitted.values),
            _by_priority("distqueue_tasks_completed", "Jobs that succeeded (ACKs taken here).",
                         m.completed.values),
            _by_priority("distqueue_tasks_failed", "Attempts that failed (FAILs taken here).",
                         m.failed.values),
            _by_priority("distqueue_tasks_retried",
                         "Failed attempts whose job will run again.", m.retried.values),
            _by_priority("distqueue_tasks_dead",
                         "Failed attempts that ended their job dead (a dead letter).",
                         m.dead.values),
        )  # fmt: skip
        counters = {
            "distqueue_tasks_cancelled": ("Jobs cancelled through this server.", m.cancelled),
            "distqueue_lease_expiries": ("Jobs taken back because their lease ran out.",
                                         m.lease_expired),
            "distqueue_workers_vanished": ("Workers whose connection dropped without BYE.",
                                           m.workers_vanished),
            "distqueue_worker_vanished_jobs": ("Jobs taken back from vanished workers.",
                                               m.worker_vanished_jobs),
            "distqueue_stale_results_refused": ("ACK/FAIL/PROGRESS refused: the worker no"
                                                " longer held the job.", m.stale_refused),
        }  # fmt: skip
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        yield _counter("distqueue_commands", "Protocol commands received, by verb.",
                       m.commands, "verb")  # fmt: skip
        yield _counter("distqueue_store_errors", "Store calls that failed (store unavailable).",
                       m.store_errors, "op")  # fmt: skip
        yield _histogram("distqueue_task_duration_seconds",
                         "A task's run time: hand-out to result, as this server saw them.",
                         m.duration, "priority")  # fmt: skip
        yield _histogram("distqueue_task_wait_seconds",
                         "A job's wait from its submit to its first hand-out.",
                         m.wait, "priority")  # fmt: skip
        yield _histogram("distqueue_store_call_seconds", "Store call latency, by operation.",
                         m.store_calls, "op")  # fmt: skip
        yield from self._gauges()
        info = GaugeMetricFamily("distqueue_build_info", "The running build.",
                                 labels=["version", "python"])  # fmt: skip
        info.add_metric([__version__, platform.python_version()], 1)
        yield info

    def _gauges(self) -> Iterator[Metric]:
        service = self.server.service
        stats = self.snapshot.stats
        workers = list(service.workers.values())
        active = sum(1 for w in workers if w.held)
        busy = sum(min(len(w.held), w.concurrency) for w in workers)
        slots = sum(w.concurrency for w in workers)
        yield _gauge("distqueue_workers_active", "Workers connected here running a job.", active)
        yield _gauge("distqueue_workers_idle", "Workers connected here running nothing.",
                     len(workers) - active)  # fmt: skip
        slot_family = GaugeMetricFamily("distqueue_worker_slots",
                                        "Job slots of the workers connected here.",
                                        labels=["state"])  # fmt: skip
        slot_family.add_metric(["busy"], busy)
        slot_family.add_metric(["free"], slots - busy)
        yield slot_family
        roles = {"client": 0, "worker": 0, "unauthenticated": 0}
        for conn in list(self.server.connections):
            session = conn.session
            if session is None or not session.authenticated:
                roles["unauthenticated"] += 1
            else:
                roles[session.role] = roles.get(session.role, 0) + 1
        conns = GaugeMetricFamily("distqueue_connections", "Open protocol connections, by role.",
                                  labels=["role"])  # fmt: skip
        for role, n in sorted(roles.items()):
            conns.add_metric([role], n)
        yield conns
        health = service.health
        yield _gauge("distqueue_store_up", "1 while the store answers, 0 during an outage.",
                     0 if health.error is not None else 1)  # fmt: skip
        yield _gauge("distqueue_uptime_seconds", "Seconds since this server started.",
                     time.monotonic() - service.started)  # fmt: skip
        if stats is None:
            return
        yield _gauge("distqueue_snapshot_age_seconds",
                     "Seconds since the store-wide gauges below were read.",
                     time.monotonic() - self.snapshot.taken_at)  # fmt: skip
        depth = GaugeMetricFamily("distqueue_queue_depth", "Queued jobs, by priority (store-wide).",
                                  labels=["priority"])  # fmt: skip
        queued: dict[str, int] = dict.fromkeys(PRIORITIES, 0)
        for p, n in stats["queued_by_priority"].items():  # (every priority above 10: ">10")
            label = priority_label(int(p))
            queued[label] += n
        for p in PRIORITIES:
            depth.add_metric([p], queued[p])
        yield depth
        jobs = GaugeMetricFamily("distqueue_jobs", "Jobs in the store, by state (store-wide).",
                                 labels=["state"])  # fmt: skip
        for state in JobState:
            jobs.add_metric([state.value], stats["jobs"].get(state.value, 0))
        yield jobs
        oldest = stats.get("oldest_ready_age")
        if oldest is not None:
            yield _gauge("distqueue_oldest_ready_age_seconds",
                         "Age of the job ready longest (store-wide).", oldest)  # fmt: skip
        xact_age = stats.get("oldest_transaction_age")
        if xact_age is not None:
            yield _gauge("distqueue_store_oldest_transaction_seconds",
                         "Age of the oldest open transaction on the PostgreSQL store's"
                         " database (it holds back vacuum).", xact_age)  # fmt: skip
        totals = CounterMetricFamily(
            "distqueue_store_events",
            "Running totals the store keeps (store-wide: aggregate with max()).",
            labels=["event"],
        )
        for event, n in sorted(stats["totals"].items()):
            totals.add_metric([event], n)
        yield totals


def registry_for(server: Server, snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(server, snapshot))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
