"""Which event loop a test ran on, as the peer-suite runners record it.

Both runners (peer/uvloop_plugin.py, peer/cpython_shim/worker.py) call
install() once in the interpreter under test; it wraps
asyncio.BaseEventLoop.__init__ so that every loop built from then on (any
subclass: iocploop's Loop, the selector and Proactor loops, uvloop's shim
class, CPython's test loops) is noted.  The runner calls start() before each
test and verdict() after it:

* "iocploop": the test built at least one iocploop loop;
* "stock":    it built loops, none of them iocploop's (asyncio's own loops,
              the uvloop shim's stock subclass, CPython's TestLoop);
* "none":     it built no loop at all (unit tests of asyncio's helpers).

peer/report.py counts a test of the iocploop run as iocploop's only when it
says "iocploop": a class that still runs on asyncio's loops in that run
(uvloop's AIO flavour, CPython classes that hard-code a stock loop) is no
evidence about iocploop, pass or fail.  Loops built in other processes (a test
that starts `python -c ...`) are not seen.

Stdlib only: it runs on Linux and in Windows CPython under Wine.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_seen: set[str] = set()
_listeners: list = []


def kind_of(loop_class: type) -> str:
    """"iocploop" for a class defined in the iocploop package, else "stock"."""
    module = getattr(loop_class, "__module__", "") or ""
    return "iocploop" if module.split(".")[0] == "iocploop" else "stock"


def install(on_loop=None) -> None:
    """Start noting loops (idempotent).  on_loop(kind) is called, in the
    thread that builds the loop, for each loop built."""
    import asyncio.base_events

    if on_loop is not None:
        _listeners.append(on_loop)
    cls = asyncio.base_events.BaseEventLoop
    if getattr(cls.__init__, "_peer_loop_probe", False):
        return
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        kind = kind_of(type(self))
        with _lock:
            _seen.add(kind)
        for listener in list(_listeners):
            try:
                listener(kind)
            except Exception:  # noqa: BLE001 - a probe must never break a test
                pass
        original(self, *args, **kwargs)

    __init__._peer_loop_probe = True
    __init__.__wrapped__ = original
    cls.__init__ = __init__


def uninstall() -> None:
    """Undo install() (for tests of the probe itself)."""
    import asyncio.base_events

    cls = asyncio.base_events.BaseEventLoop
    if getattr(cls.__init__, "_peer_loop_probe", False):
        cls.__init__ = cls.__init__.__wrapped__
    _listeners.clear()


def start() -> None:
    """Forget what earlier tests built."""
    with _lock:
        _seen.clear()


def verdict() -> str:
    """"iocploop", "stock" or "none" for the loops built since start()."""
    with _lock:
        if "iocploop" in _seen:
            return "iocploop"
        return "stock" if _seen else "none"
