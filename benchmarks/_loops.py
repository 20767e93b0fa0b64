"""The loops the benchmarks compare, by name (each imported only when asked
for), and how a benchmark process runs one."""
from __future__ import annotations

import asyncio
import sys
import traceback

LOOPS = ("asyncio", "uvloop", "rloop", "iocploop")


def loop_factory(name: str, socket_reuse: bool = True):
    """asyncio | uvloop | rloop | iocploop -> a function making such a loop
    (socket_reuse applies to iocploop)."""
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

        return lambda: iocploop.new_event_loop(socket_reuse=socket_reuse)
    raise ValueError(f"unknown loop {name!r}")


def settle_allocator() -> None:
    """Free one 1 MiB block now, so that glibc raises its mmap threshold.

    In a fresh process glibc serves every malloc of 128 KiB or more with mmap;
    recv(n) then shrinks its bytes object to what arrived (mremap) and frees
    it (munmap): three system calls and a page fault per read, wherever a
    loop or a server asks recv for more than 128 KiB and data is there
    (asyncio's transports read 256 KiB at a time; uvloop's sock_recv(conn,
    256 KiB) too).  Only the free of such a block whole raises the threshold,
    for the rest of the process, as happens early in any long-running
    server; in a benchmark's fresh process it depends on what happened to
    run first (importing iocploop did it, a recv that found nothing does it,
    importing asyncio, uvloop or rloop does not).  Every benchmark process
    does it first, so every loop runs in the same, long-running state.
    """
    block = bytearray(1 << 20)
    del block


def loop_arguments(parser) -> None:
    """LOOP and --no-socket-reuse, for a benchmark process's argparse."""
    parser.add_argument("loop", choices=LOOPS)
    parser.add_argument("--no-socket-reuse", action="store_true",
                        help="iocploop.new_event_loop(socket_reuse=False)")


def run_on(name: str, coro, socket_reuse: bool = True):
    """Run coro to completion on a new loop of that name, the allocator settled."""
    settle_allocator()
    with asyncio.Runner(loop_factory=loop_factory(name, socket_reuse)) as runner:
        return runner.run(coro)


def missing_api(exc: NotImplementedError) -> str:
    """Which method raised exc: 'create_unix_server', say."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = frames[-1].name if frames else "?"
    return f"{where}() raises NotImplementedError" + (f" ({exc})" if str(exc) else "")


async def until_killed() -> None:
    """What a benchmark server awaits once it listens.  Not
    Server.serve_forever(): rloop 0.5.0's starts the listener a second time
    (create_server already started it), after which it refuses connections."""
    await asyncio.get_running_loop().create_future()


def serve(name: str, coro, socket_reuse: bool = True) -> None:
    """Run a benchmark server's coroutine (it prints the port it listens on,
    then serves until killed).  A loop that lacks an API the server needs
    (NotImplementedError, as rloop raises for TLS or Unix sockets) prints
    "unsupported: ..." in place of the port, which the driver shows in the
    table's note instead of failing the run."""
    try:
        run_on(name, coro, socket_reuse)
    except NotImplementedError as exc:
        print(f"unsupported: {name} {missing_api(exc)}", flush=True)
        sys.exit(0)
