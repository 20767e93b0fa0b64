"""Does this Windows provider really serve AcceptEx into a recycled socket?

Real Windows does.  Wine's provider accepts the AcceptEx and completes it,
but the recycled socket then never delivers a byte: a silent failure that
would strand a user's connection.  So before the first accepted socket of a
family is recycled, a probe runs once per process, off the loop thread, on a
completion port of its own: accept a loopback connection, DisconnectEx it
with TF_REUSE_SOCKET, AcceptEx a second connection into the same socket, and
check that a byte the peer sends while a receive waits arrives.  Until the verdict is in, server
sockets are closed as usual; a negative verdict turns server-side reuse off.
"""
from __future__ import annotations

import socket
import threading
import time

__all__ = ["server_reuse_verdict"]

_TIMEOUT = 2.0            # per step; loopback completes in well under 1 ms
_verdicts: dict[int, bool] = {}   # address family -> verdict (process-wide)
_running: set[int] = set()
_lock = threading.Lock()


def server_reuse_verdict(family: int, on_verdict) -> bool | None:
    """The verdict for `family` if known; otherwise start the probe (once)
    and return None.  on_verdict(family, ok) is called from the probe's
    thread when it finishes."""
    with _lock:
        if family in _verdicts:
            return _verdicts[family]
        if family in _running:
            return None
        _running.add(family)
    threading.Thread(target=_run, args=(family, on_verdict), daemon=True,
                     name="iocploop-reuse-probe").start()
    return None


def _run(family, on_verdict):
    try:
        ok = _probe(family)
    except Exception:   # any surprise means: do not reuse
        ok = False
    with _lock:
        _verdicts[family] = ok
        _running.discard(family)
    on_verdict(family, ok)


def _probe(family) -> bool:
    from ._port import CompletionPort

    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    port = CompletionPort(16)
    socks = []

    def new(*args):
        s = socket.socket(family, *args)
        socks.append(s)
        return s

    def finished(op):
        deadline = time.monotonic() + _TIMEOUT
        while not op.done and time.monotonic() < deadline:
            port.poll(0.05)
        return op.done and op.result >= 0

    def ignore(op):
        pass

    try:
        listener = new()
        listener.bind((host, 0))
        listener.listen(4)
        address = listener.getsockname()[:2]
        target = new()
        for round_ in (1, 2):
            op = port.accept(listener, ignore, target)
            peer = socket.create_connection(address, timeout=_TIMEOUT)
            socks.append(peer)
            if not finished(op):
                return False
            op.accepted()
            if round_ == 1:
                peer.close()   # the peer closes first: no TIME_WAIT on our side
                if not finished(port.disconnect(target, ignore)):
                    return False
        # The receive is pending before the byte is sent: Wine completes a
        # receive that finds data already there, but never one that waits.
        buf = bytearray(1)
        op = port.recv(target, buf, ignore)
        port.poll(0)
        peer.sendall(b"!")
        return finished(op) and op.result == 1 and buf == b"!"
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()
        port.close()
