"""Socket reuse: connections that ended cleanly give their socket back.

Windows (DisconnectEx, from "Scalable Winsock Applications", the Winsock 2
chapter iocploop started from): when a transport ends gracefully,
its socket is disconnected with DisconnectEx(TF_REUSE_SOCKET) instead of
closed; once the kernel reports the disconnect done, the socket waits in a
spare pool and serves the next AcceptEx of its listener (server side) or the
next ConnectEx to the same address family (client side).  A socket is
never handed out before its disconnect completed, so no byte of its
previous connection can reach the next user.

Linux has no way to recycle an accepted socket.  A client socket is
shut down for writing and, once its connection is over at the TCP level
(both FINs exchanged and acknowledged: TCP_INFO says CLOSE), dissolved with
connect(AF_UNSPEC) so it can connect again.  It waits for that at most
_LINUX_CLOSE_WAIT seconds (the peer's FIN, one round trip for the ACK);
a connection still open then is closed as usual (dissolving it would
reset it).

Providers that refuse a recycled socket (an AcceptEx may say WSAEINVAL;
Wine's ConnectEx says WSAEISCONN) are detected on first use: the refused socket is
closed, a fresh one takes its place (the connection is not lost), and reuse
is switched off for that kind of socket on this loop.

Limits: each spare pool holds at most `max_spares` sockets, and at most
`max_disconnecting` disconnects are in flight (DisconnectEx may take as
long as TIME_WAIT when this side closed first); beyond those, sockets are
simply closed.
"""
from __future__ import annotations

import errno
import socket
import time
import weakref

from ._port import IS_WINDOWS
from ._reuse_probe import server_reuse_verdict
from ._socket_kind import family_of, kind_of, type_of

__all__ = ["SocketRecycler", "SparePool"]

# Errors with which a provider refuses a recycled socket.
_REFUSALS = {10022, 10056} if IS_WINDOWS else {errno.EISCONN, errno.EINVAL}

_DEFAULT_MAX_SPARES = 64
_DEFAULT_MAX_DISCONNECTING = 256
# Linux: how long a closed client socket may wait for the peer to finish the
# TCP close before it is dissolved for reuse (else it is closed).
_LINUX_CLOSE_WAIT = 1.0


class SparePool:
    """Disconnected sockets waiting for their next connection (bounded).
    role: "server" (they go to AcceptEx) or "client" (ConnectEx / connect)."""

    def __init__(self, limit: int, role: str):
        self.limit = limit
        self.role = role
        self._socks = []

    def __len__(self):
        return len(self._socks)

    def has_room(self) -> bool:
        return len(self._socks) < self.limit

    def give(self, sock) -> None:
        if self.has_room():
            self._socks.append(sock)
        else:
            sock.close()

    def take(self):
        return self._socks.pop() if self._socks else None

    def close(self) -> None:
        socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


class SocketRecycler:
    """One loop's socket reuse: policy, counters and the client spare pools."""

    def __init__(self, loop, enabled: bool = True, max_spares: int = _DEFAULT_MAX_SPARES,
                 max_disconnecting: int = _DEFAULT_MAX_DISCONNECTING):
        self._loop = loop
        self._port = loop._port
        self.enabled = bool(enabled)
        self.max_spares = max_spares
        self.max_disconnecting = max_disconnecting
        self.created = 0
        self.reused = 0
        self.refused = 0
        self.first_data_dropped = 0
        self._refused_kinds = set()
        self._client_spares: dict[tuple, SparePool] = {}
        self._own_clients: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()
        self._disconnecting = {}   # Windows: DisconnectEx Operation -> (socket, home)
        self._dissolving = {}      # Linux: socket -> timer of its next dissolve attempt

    # -- policy ---------------------------------------------------------------

    def can_reuse(self, sock, role: str) -> bool:
        """Whether a socket of this kind, on this provider, can be recycled
        for `role` ("server": AcceptEx, "client": ConnectEx / connect)."""
        if not self.enabled or (role, *kind_of(sock)) in self._refused_kinds:
            return False
        if type_of(sock) != socket.SOCK_STREAM or family_of(sock) not in (socket.AF_INET,
                                                                          socket.AF_INET6):
            return False
        if not IS_WINDOWS:
            return role == "client"
        try:
            ext = self._port.extensions(sock)
        except OSError:
            return False
        return "DisconnectEx" in ext and ("AcceptEx" if role == "server" else "ConnectEx") in ext

    def is_refusal(self, exc: OSError) -> bool:
        code = getattr(exc, "winerror", None) or exc.errno
        return code in _REFUSALS

    def refuse(self, sock, exc: OSError, role: str) -> None:
        """The provider refused a recycled socket for `role`: close it and
        stop reusing sockets of its kind for that role on this loop."""
        kind = kind_of(sock)
        sock.close()
        self._mark_refused(role, kind)

    def _mark_refused(self, role, kind) -> None:
        if (role, *kind) in self._refused_kinds:
            return
        self.refused += 1
        self._refused_kinds.add((role, *kind))
        if role == "client":
            spares = self._client_spares.pop(kind, None)
            if spares is not None:
                spares.close()

    def stats(self) -> dict:
        return {
            "enabled": self.enabled,
            "created": self.created,
            "reused": self.reused,
            "refused": self.refused,
            "pooled": sum(map(len, self._client_spares.values())) + sum(
                len(pool.spares) for pool in self._loop._accept_pools.values()),
            "disconnecting": len(self._disconnecting) + len(self._dissolving),
        }

    # -- client sockets -------------------------------------------------------

    def adopt_client(self, sock) -> None:
        """A socket iocploop made for create_connection: eligible for reuse."""
        self._own_clients.add(sock)

    def client_home(self, sock):
        if sock not in self._own_clients or not self.can_reuse(sock, "client"):
            return None
        pool = self._client_spares.get(kind_of(sock))
        if pool is None:
            pool = self._client_spares[kind_of(sock)] = SparePool(self.max_spares, "client")
        return pool

    def take_client_spare(self, family, type_):
        if not self.enabled or ("client", family, type_) in self._refused_kinds:
            return None
        pool = self._client_spares.get((family, type_))
        return pool.take() if pool is not None else None

    # -- recycling ------------------------------------------------------------

    def rewrap(self, sock):
        """A new socket object for sock's handle, sock left detached: whoever
        kept the old object (get_extra_info('socket')) sees a closed socket,
        not the next user's connection."""
        fresh = socket.socket(*kind_of(sock), sock.proto, fileno=sock.detach())
        fresh.setblocking(False)   # the new object must know the handle is non-blocking
        self._port.adopt(sock, fresh)
        return fresh

    def recycle(self, sock, home: SparePool) -> None:
        """Instead of closing a socket whose connection ended cleanly: give it
        back to `home` once it is disconnected, or close it."""
        if (home is None or not self.enabled or (home.role, *kind_of(sock)) in self._refused_kinds
                or not home.has_room() or sock.fileno() < 0
                or len(self._disconnecting) + len(self._dissolving) >= self.max_disconnecting):
            sock.close()
            return
        if IS_WINDOWS and home.role == "server" and not self._server_reuse_verified(sock):
            sock.close()
            return
        fresh = self.rewrap(sock)
        if IS_WINDOWS or home.role == "server":
            # DisconnectEx(TF_REUSE_SOCKET); the socket is pooled when it completes.
            try:
                op = self._port.disconnect(fresh, self._on_disconnected)
            except OSError:
                fresh.close()
                return
            self._disconnecting[op] = (fresh, home)
            return
        # Linux client: send our FIN, then connect(AF_UNSPEC) once the
        # connection is over at the TCP level (at once on loopback; else
        # after the peer's FIN and ACK, waited for briefly).
        try:
            fresh.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._dissolve_when_closed(fresh, home, time.monotonic() + _LINUX_CLOSE_WAIT, 0.005)

    def _dissolve_when_closed(self, sock, home, deadline, delay) -> None:
        self._dissolving.pop(sock, None)
        try:
            self._port.dissolve(sock)
        except OSError as exc:
            if (exc.errno == errno.EISCONN and time.monotonic() < deadline
                    and not self._loop.is_closed()):
                self._dissolving[sock] = self._loop.call_later(
                    delay, self._dissolve_when_closed, sock, home, deadline, min(delay * 2, 0.1))
                return
            sock.close()   # still open at the TCP level: close as usual
            return
        if not self.enabled or (home.role, *kind_of(sock)) in self._refused_kinds:
            sock.close()
        else:
            home.give(sock)

    def _server_reuse_verified(self, sock) -> bool:
        """Windows: has the once-per-process probe shown that AcceptEx into a
        recycled socket works on this provider (_reuse_probe.py)?"""
        verdict = server_reuse_verdict(sock.family, self._verdict_from_thread)
        if verdict is False:
            self._mark_refused("server", kind_of(sock))
        return bool(verdict)

    def _verdict_from_thread(self, family, ok) -> None:
        if ok:
            return
        try:
            self._loop.call_soon_threadsafe(self._mark_refused, "server",
                                            (family, socket.SOCK_STREAM))
        except RuntimeError:
            pass   # the loop closed meanwhile

    def _on_disconnected(self, op) -> None:
        sock, home = self._disconnecting.pop(op)
        if op.result < 0 or not self.enabled or (home.role, *kind_of(sock)) in self._refused_kinds:
            sock.close()
        else:
            home.give(sock)

    def close(self) -> None:
        """At loop close, after the port closed: nothing is in flight any more."""
        for sock, _home in self._disconnecting.values():
            sock.close()
        self._disconnecting.clear()
        for sock, timer in self._dissolving.items():
            timer.cancel()
            sock.close()
        self._dissolving.clear()
        for pool in self._client_spares.values():
            pool.close()
        self._client_spares.clear()
