"""iocploop: a completion-based asyncio event loop.

Windows: an I/O completion port.  Linux: io_uring.  Entry points:

    iocploop.run(main())                                  # like asyncio.run
    asyncio.Runner(loop_factory=iocploop.new_event_loop)
    asyncio.run(main(), loop_factory=iocploop.new_event_loop)   # 3.12+
    iocploop.install()  /  iocploop.EventLoopPolicy       # older code
    python -m iocploop app.py [args]                      # unmodified programs
"""
from __future__ import annotations

import asyncio as _asyncio
import sys as _sys
import warnings as _warnings
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any
from typing import Callable as _Callable
from typing import Coroutine as _Coroutine
from typing import TypeVar as _TypeVar

from ._accept_pool import DEFAULT_ACCEPT_POOL_SIZE as _DEFAULT_ACCEPT_POOL_SIZE
from ._errors import BackendUnavailableError
from ._named_pipes import PipeServer, open_pipe_connection, start_pipe_server
from .loop import Loop

__all__ = ["Loop", "new_event_loop", "run", "EventLoopPolicy", "install",
           "BackendUnavailableError", "PipeServer", "open_pipe_connection",
           "start_pipe_server"]
__version__ = "0.1.0"

_T = _TypeVar("_T")


def new_event_loop(*, queue_depth: int = 256,
                   accept_pool_size: int = _DEFAULT_ACCEPT_POOL_SIZE,
                   socket_reuse: bool = True) -> Loop:
    """A new iocploop event loop.  Raises BackendUnavailableError (with the
    reason and the fix) where the system's completion facility is unusable.
    queue_depth sizes the completion queue, accept_pool_size the accepts
    kept posted per listener; socket_reuse recycles connection sockets
    (docs/scalability.md)."""
    return Loop(queue_depth=queue_depth, accept_pool_size=accept_pool_size,
                socket_reuse=socket_reuse)


def run(main: _Coroutine[_Any, _Any, _T], *, debug: bool | None = None,
        loop_factory: _Callable[[], _asyncio.AbstractEventLoop] | None = None) -> _T:
    """Run a coroutine on a new iocploop event loop and return its result,
    with asyncio.run's semantics (async generators and the default executor
    are shut down, Ctrl+C cancels the main task)."""
    if _asyncio.events._get_running_loop() is not None:
        # Checked before a Runner exists, as asyncio.run does.
        raise RuntimeError("iocploop.run() cannot be called from a running event loop")
    with _asyncio.Runner(debug=debug, loop_factory=loop_factory or new_event_loop) as runner:
        return runner.run(main)


def _default_policy_base() -> type:
    # asyncio renamed its default policy when it deprecated policies (3.14).
    base = getattr(_asyncio.events, "_DefaultEventLoopPolicy", None)
    if base is None:
        base = _asyncio.DefaultEventLoopPolicy
    return base


if _TYPE_CHECKING:
    _PolicyBase = _asyncio.DefaultEventLoopPolicy
else:
    _PolicyBase = _default_policy_base()


class EventLoopPolicy(_PolicyBase):
    """asyncio's default policy, creating iocploop loops.  Event loop policies
    are deprecated from CPython 3.14: prefer run() or a loop_factory."""

    def new_event_loop(self) -> Loop:
        return new_event_loop()

    def __repr__(self) -> str:
        return "<iocploop.EventLoopPolicy>"


def install() -> None:
    """Make iocploop the loop that asyncio.run() and asyncio.new_event_loop() use."""
    if _sys.version_info >= (3, 12):
        _warnings.warn(
            "iocploop.install() is deprecated in favor of iocploop.run() or "
            "asyncio.run(..., loop_factory=iocploop.new_event_loop)",
            DeprecationWarning, stacklevel=2)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", DeprecationWarning)
        _asyncio.set_event_loop_policy(EventLoopPolicy())
