"""The tasks benchmarks/flow_drain.py's worker serves: the bench tasks and 1,000
more types (``lim.0`` .. ``lim.999``), each limited by that benchmark."""

from __future__ import annotations

import distqueue
import distqueue.benchtasks  # bench.sync, bench.async

for _i in range(1000):
    distqueue.task(name=f"lim.{_i}")(lambda: None)
