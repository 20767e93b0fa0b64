"""Peer-suite hook (peer/cpython_suite.py puts this folder first on PYTHONPATH).

With IOCPLOOP_PEER_TARGET=iocploop, iocploop becomes the loop that
asyncio.new_event_loop(), asyncio.run() and the default policy give, in this
interpreter and in every child interpreter a test starts (they inherit the
environment).  Every test module's tearDownModule resets the policy to None;
asyncio 3.11 then re-creates it from the name asyncio.DefaultEventLoopPolicy
(events._init_event_loop_policy: `from . import DefaultEventLoopPolicy`), so
rebinding that name makes the choice stick.  Any other value: nothing happens.
"""
import os

if os.environ.get("IOCPLOOP_PEER_TARGET") == "iocploop":
    import asyncio
    import asyncio.events

    import iocploop

    asyncio.DefaultEventLoopPolicy = iocploop.EventLoopPolicy
    if hasattr(asyncio.events, "DefaultEventLoopPolicy"):  # not on 3.11; harmless elsewhere
        asyncio.events.DefaultEventLoopPolicy = iocploop.EventLoopPolicy
    asyncio.set_event_loop_policy(None)  # the next lookup builds ours
