"""loop.stats(): one call that says what the loop holds and how it has run."""
from __future__ import annotations

from collections import Counter
from typing import Any


class StatsMethods:
    """Mixed into Loop (after the server, socket-reuse and port parts exist)."""

    def stats(self) -> dict[str, Any]:
        """A snapshot of the loop, as plain data (docs/architecture.md, Statistics):

        - backend: "iocp" or "io_uring";
        - operations: pending (kernel operations in flight, by kind in
          pending_by_kind), and since the loop was made: submitted,
          completed, cancels;
        - waits: waits for completions, kernel_calls made by them,
          completions_per_wait;
        - wakeups: call_soon_threadsafe wakeups sent to the kernel, and
          merged (no kernel call needed);
        - accept_pools: listeners, accepts posted, pool size per listener;
        - sockets: loop.socket_stats() (reuse counters, pooled sockets);
        - transports: socket transports open;
        - scheduler: ready callbacks, timers scheduled.
        """
        self._check_closed()
        port = self._port
        core = port.stats()
        pools = list(self._accept_pools.values())
        waits = core["waits"]
        return {
            "backend": port.backend,
            "operations": {
                "pending": port.pending,
                "pending_by_kind": dict(Counter(op.kind for op in port._ops.values())),
                "submitted": core["submitted"],
                "completed": core["completed"],
                "cancels": core["cancels"],
            },
            "waits": {
                "waits": waits,
                "kernel_calls": core["enters"],
                "completions_per_wait": core["completed"] / waits if waits else 0.0,
            },
            "wakeups": {"sent": core["wakeups_sent"], "merged": core["wakeups_merged"]},
            "accept_pools": {
                "listeners": len(pools),
                "posted": sum(pool.posted for pool in pools),
                "size": self.accept_pool_size,
            },
            "sockets": self.socket_stats(),
            "transports": len(self._transports),
            "scheduler": {"ready": len(self._ready), "timers": len(self._scheduled)},
        }
