"""A stand-in for the `uvloop` package, for running uvloop's own test suite
(fetched at test time by peer/uvloop_suite.py) against another event loop.

The environment variable IOCPLOOP_PEER_TARGET picks what `uvloop.Loop` is:

* ``iocploop`` -- iocploop's loop (``iocploop.Loop``);
* ``asyncio``  -- stock asyncio's default loop for this platform (selector
  loop on Linux, Proactor on Windows), subclassed here so that, like
  iocploop's, its class is defined outside the ``asyncio`` package and the
  suite's ``is_asyncio_loop()`` branches go the same way for both targets.
  This is the reference run.

It is an environment variable, not a setting, so that the child interpreters
some tests start (``import uvloop`` in a ``python -c`` program) see the same
target.  The API is uvloop's: Loop, new_event_loop, EventLoopPolicy, run,
install.  Only the module `uvloop._testbase` (the fetched file, executed
unmodified) and `uvloop.loop` (uvloop's Cython internals: importing it skips
the test) exist besides.
"""
import asyncio as _asyncio
import os as _os
import sys as _sys
import warnings as _warnings

__all__ = ("Loop", "new_event_loop", "run", "install", "EventLoopPolicy")
__version__ = "0.23.0+peer-shim"

TARGET = _os.environ.get("IOCPLOOP_PEER_TARGET", "")

if TARGET == "iocploop":
    import iocploop as _iocploop

    Loop = _iocploop.Loop
    _PolicyBase = _iocploop.EventLoopPolicy

elif TARGET == "asyncio":
    _PolicyBase = getattr(_asyncio.events, "_DefaultEventLoopPolicy", None) \
        or _asyncio.DefaultEventLoopPolicy

    class Loop(_PolicyBase._loop_factory):
        """Stock asyncio's default loop, as a class outside asyncio."""

else:
    raise ImportError(
        "the uvloop shim needs IOCPLOOP_PEER_TARGET=iocploop or =asyncio "
        f"(got {TARGET!r}); see peer/uvloop_suite.py")


def new_event_loop():
    """Return a new event loop of the target."""
    return Loop()


class EventLoopPolicy(_PolicyBase):
    """asyncio's default policy (child watchers and all, on Unix before 3.12)
    creating the target's loops."""

    def _loop_factory(self):
        return new_event_loop()

    def new_event_loop(self):
        return new_event_loop()

    def __repr__(self):
        return f"<uvloop shim EventLoopPolicy ({TARGET})>"


def install():
    """Make the target's policy asyncio's (uvloop.install's contract)."""
    if _sys.version_info >= (3, 12):
        _warnings.warn("uvloop.install() is deprecated in favor of uvloop.run() "
                       "starting with Python 3.12.", DeprecationWarning, stacklevel=1)
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, loop_factory=new_event_loop, debug=None, **run_kwargs):
    """uvloop.run's contract: run `main` on a loop from loop_factory, which must
    be a `Loop` (TypeError otherwise).  On the iocploop target this goes through
    iocploop.run(); on the asyncio target through asyncio.Runner."""

    async def checked():
        if not isinstance(_asyncio.get_running_loop(), Loop):
            raise TypeError("uvloop.run() uses a non-uvloop event loop")
        return await main

    if TARGET == "iocploop" and not run_kwargs:
        return _iocploop.run(checked(), debug=debug, loop_factory=loop_factory)
    if _asyncio.events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with _asyncio.Runner(loop_factory=loop_factory, debug=debug, **run_kwargs) as runner:
        return runner.run(checked())
