"""The loops the benchmarks compare, by name (each imported only when asked for)."""
from __future__ import annotations

import asyncio


def loop_factory(name: str):
    """asyncio | uvloop | rloop | iocploop -> that loop's new_event_loop."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "rloop":
        import rloop

        return rloop.new_event_loop
    if name == "iocploop":
        import iocploop

        return iocploop.new_event_loop
    raise ValueError(f"unknown loop {name!r}")
