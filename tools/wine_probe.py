"""Probe what Wine's Winsock does, with plain Windows CPython (no iocploop).

Run by ``python3 tools/wine.py probe`` under Wine (it also runs on real
Windows, where its answers are the reference).  Each probe prints one line
``W<n> <name>: <what was seen>``; docs/windows-under-wine.md lists the facts
by the same numbers, and every Windows test that is skipped or xfailed
because of Wine names the fact it rests on.  The probes use CPython's own
``_overlapped`` module (the proactor's) and a completion port of their own.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import select
import socket
import sys
import tempfile
import time

import _overlapped

KERNEL32 = ctypes.windll.kernel32
SKIP_MODES = 0x1 | 0x2   # FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE
ERROR_IO_INCOMPLETE = 996
WSAEMSGSIZE = 10040


class Port:
    def __init__(self):
        self.handle = _overlapped.CreateIoCompletionPort(_overlapped.INVALID_HANDLE_VALUE, 0,
                                                         0, 1)

    def attach(self, handle, skip=False) -> bool:
        _overlapped.CreateIoCompletionPort(handle, self.handle, 0, 0)
        if skip:
            return bool(KERNEL32.SetFileCompletionNotificationModes(
                ctypes.c_void_p(handle), ctypes.c_ubyte(SKIP_MODES)))
        return False

    def packet(self, ms: int):
        """(error, bytes, address) of the next packet, or None."""
        got = _overlapped.GetQueuedCompletionStatus(self.handle, ms)
        return None if got is None else (got[0], got[1], got[3])


def tcp_pair(bufsize=None):
    with socket.socket() as listener:
        if bufsize:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.socket()
        if bufsize:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def status_block(ov) -> str:
    """What OVERLAPPED.Internal holds right now (read from memory: _overlapped
    refuses getresult() for a call that failed)."""
    value = ctypes.c_uint32.from_address(ov.address).value
    return "STATUS_PENDING" if value == 0x103 else f"final {value:#x}"


def returned(ov) -> str:
    """What the call itself returned: success, or ERROR_IO_PENDING."""
    return "pending" if ov.error == 997 else "success" if ov.error == 0 else str(ov.error)


def fill(sock) -> None:
    while True:
        try:
            sock.send(bytes(65536))
        except BlockingIOError:
            return


def say(fact: str, text: str) -> None:
    print(f"{fact}: {text}", flush=True)


# -- the probes --------------------------------------------------------------------------


def skip_on_success():
    """W6: with FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, which calls finish at
    once without a packet, and which report pending whatever happens."""
    port = Port()
    a, b = tcp_pair()
    skip = port.attach(a.fileno(), skip=True)
    b.send(b"data")
    select.select([a], [], [], 5)
    ov = _overlapped.Overlapped(0)
    ov.WSARecv(a.fileno(), 100, 0)
    say("W6 WSARecv", f"mode set {skip}; data waiting: returned {returned(ov)}; "
        f"packet {port.packet(300) is not None}")
    ov = _overlapped.Overlapped(0)
    ov.WSASend(a.fileno(), b"x" * 100, 0)
    say("W6 WSASend", f"room: returned {returned(ov)}; packet {port.packet(300) is not None}")
    ov = _overlapped.Overlapped(0)
    ov.WSARecv(a.fileno(), 100, 0)
    first = returned(ov)
    b.send(b"later")
    say("W6 WSARecv waiting", f"no data: returned {first}; packet after data came "
        f"{port.packet(2000) is not None}")
    # AcceptEx, ConnectEx, TransmitFile with everything ready.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port.attach(listener.fileno(), skip=True)
        client = socket.create_connection(listener.getsockname())
        time.sleep(0.1)
        target = socket.socket()
        ov = _overlapped.Overlapped(0)
        ov.AcceptEx(listener.fileno(), target.fileno())
        say("W6 AcceptEx", f"a client waiting: returned {returned(ov)}; "
            f"packet {port.packet(2000) is not None}")
        target.close()
        client.close()
        c = socket.socket()
        c.bind(("127.0.0.1", 0))
        port.attach(c.fileno(), skip=True)
        ov = _overlapped.Overlapped(0)
        ov.ConnectEx(c.fileno(), listener.getsockname())
        say("W6 ConnectEx", f"loopback: returned {returned(ov)}, status block then "
            f"{status_block(ov)}; packet {port.packet(2000) is not None}")
        c.close()
    with tempfile.TemporaryFile() as f:
        f.write(b"z" * 1000)
        f.flush()
        import msvcrt
        ov = _overlapped.Overlapped(0)
        ov.TransmitFile(a.fileno(), msvcrt.get_osfhandle(f.fileno()), 0, 0, 1000, 0, 0)
        first, block = returned(ov), status_block(ov)
        pkt = port.packet(2000)
        say("W6 TransmitFile", f"1000 bytes, room: returned {first}, status block then "
            f"{block}; packet {pkt is not None}; bytes in it {pkt[1] if pkt else None} (W2)")
    a.close()
    b.close()
    # Pipes.
    from asyncio import windows_utils
    r, w = windows_utils.pipe(overlapped=(True, True), duplex=True)
    port.attach(r, skip=True)
    port.attach(w, skip=True)
    ov = _overlapped.Overlapped(0)
    ov.WriteFile(w, b"p" * 100)
    say("W6 WriteFile", f"pipe with room: returned {returned(ov)}; "
        f"packet {port.packet(300) is not None}")
    ov = _overlapped.Overlapped(0)
    ov.ReadFile(r, 1000)
    say("W6 ReadFile", f"pipe, data waiting: returned {returned(ov)}; "
        f"packet {port.packet(300) is not None}")


def disconnect_ex():
    """W7: DisconnectEx finishes inside the call but reports pending."""
    port = Port()
    a, b = tcp_pair()
    port.attach(a.fileno(), skip=True)
    ov = _overlapped.Overlapped(0)
    ov.DisconnectEx(a.fileno(), 0)
    say("W7 DisconnectEx", f"returned {returned(ov)}; status block right after the call "
        f"{status_block(ov)}; packet (the socket skips the port) "
        f"{port.packet(1000) is not None}")
    a.close()
    b.close()


def failed_submits():
    """W8 / W9: what a refused submit leaves in its OVERLAPPED."""
    port = Port()
    a, b = tcp_pair()
    port.attach(a.fileno())
    b.close()
    time.sleep(0.1)
    error = None
    for _ in range(20):
        ov = _overlapped.Overlapped(0)
        try:
            ov.WSASend(a.fileno(), b"x" * 1024, 0)
        except OSError as exc:
            error = exc.winerror
            break
        port.packet(500)
    say("W8 send on a reset connection", f"refused at submission with {error}; status block "
        f"{status_block(ov)}; packet {port.packet(500) is not None}")
    ov = _overlapped.Overlapped(0)
    try:
        ov.WSARecv(a.fileno(), 100, 0)
        recv = f"returned {returned(ov)}"
    except OSError as exc:
        recv = f"refused with {exc.winerror}"
    say("W9 recv on a reset connection", recv)
    a.close()
    u, v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(
        socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    v.bind(("127.0.0.1", 0))
    port.attach(v.fileno())
    ov = _overlapped.Overlapped(0)
    try:
        ov.WSASendTo(v.fileno(), bytes(70_000), 0, u.getsockname())
        error = None
    except OSError as exc:
        error = exc.winerror
    say("W8 WSASendTo too large", f"refused with {error}; status block {status_block(ov)}; "
        f"packet {port.packet(1000) is not None}")
    u.close()
    v.close()


def sends_and_close():
    """W10 / W11: a send closed under, a send cancelled half way."""
    port = Port()
    a, b = tcp_pair(8192)
    port.attach(a.fileno())
    ov = _overlapped.Overlapped(0)
    ov.WSASend(a.fileno(), bytes(300_000), 0)
    time.sleep(0.2)
    a.close()
    first = port.packet(2000)
    b.close()
    second = port.packet(2000) if first is None else None
    say("W10 send closed under", f"a send waiting for room, its socket closed: packet within "
        f"2 s {first}; after the peer closed {second}")
    a, b = tcp_pair(8192)
    port.attach(a.fileno())
    ov = _overlapped.Overlapped(0)
    ov.WSASend(a.fileno(), bytes(65536), 0)
    time.sleep(0.2)
    ov.cancel()
    pkt = port.packet(2000)
    say("W11 send cancelled half way", f"packet error {pkt and pkt[0]}, bytes {pkt and pkt[1]}")
    a.close()
    b.close()


def reset_and_receives():
    """W18: a connection reset (RST) and the receives around it."""
    port = Port()
    a, b = tcp_pair()
    port.attach(a.fileno())
    ov = _overlapped.Overlapped(0)
    ov.WSARecv(a.fileno(), 100, 0)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, bytes([1, 0, 0, 0]))
    b.close()   # linger 0: a reset
    waiting = port.packet(2000)
    ov2 = _overlapped.Overlapped(0)
    try:
        ov2.WSARecv(a.fileno(), 100, 0)
        after = port.packet(2000)
    except OSError as exc:
        after = f"refused {exc.winerror}"
    say("W18 reset", f"a receive waiting when it came: {waiting}; one posted after: {after}")
    a.close()


def cancelled_transmit_file():
    """W19: TransmitFile cancelled half way: does its packet say how much left?"""
    import msvcrt
    port = Port()
    a, b = tcp_pair(8192)
    port.attach(a.fileno())
    with tempfile.TemporaryFile() as f:
        f.write(os.urandom(1 << 20))
        f.flush()
        ov = _overlapped.Overlapped(0)
        ov.TransmitFile(a.fileno(), msvcrt.get_osfhandle(f.fileno()), 0, 0, 1 << 20, 0, 0)
        time.sleep(0.3)
        received = 0
        ov.cancel()
        pkt = port.packet(2000)
        time.sleep(0.3)
        while True:
            try:
                chunk = b.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            received += len(chunk)
    say("W19 TransmitFile cancelled half way", f"packet error {pkt and pkt[0]}, bytes "
        f"{pkt and pkt[1]}; the peer received {received}")
    a.close()
    b.close()


def icmp_then_receive():
    """W12: a connected UDP socket after an ICMP port unreachable."""
    port = Port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))
        dead_addr = dead.getsockname()
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    a.connect(dead_addr)
    port.attach(a.fileno())
    a.send(b"to nobody")
    time.sleep(0.3)
    ov = _overlapped.Overlapped(0)
    try:
        ov.WSARecv(a.fileno(), 100, 0)
        first = port.packet(1000)
    except OSError as exc:
        first = f"refused {exc.winerror}"
    # The next datagram from the connected address.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(dead_addr)
        peer.sendto(b"hello", a.getsockname())
        ov2 = _overlapped.Overlapped(0)
        try:
            ov2.WSARecv(a.fileno(), 100, 0)
            second = port.packet(2000)
        except OSError as exc:
            second = f"refused {exc.winerror}"
        a.setblocking(True)
        a.settimeout(1)
        try:
            blocking = a.recv(100)
        except OSError as exc:
            blocking = f"{type(exc).__name__} {getattr(exc, 'winerror', None)}"
    say("W12 ICMP then receive", f"first overlapped receive {first}; the next one, a "
        f"datagram sent: {second}; a blocking recv then: {blocking!r}")
    a.close()


def proactor_datagrams():
    """W13 / W14 / W15: the stock proactor's datagram transport under Wine,
    in the scenarios of tests/test_udp.py."""
    class Proto(asyncio.DatagramProtocol):
        def __init__(self, echo=False):
            self.got = []
            self.errors = []
            self.echo = echo

        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.got.append(data)
            if self.echo:
                self.transport.sendto(data, addr)

        def error_received(self, exc):
            self.errors.append(exc)

    async def main():
        loop = asyncio.get_running_loop()
        rx, rp = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        tx, tp = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        tx.sendto(b"", rx.get_extra_info("sockname"))
        tx.sendto(b"after", rx.get_extra_info("sockname"))
        await asyncio.sleep(1)
        say("W13 proactor empty datagram", f"received {rp.got!r} (sent b'' then b'after')")
        rx.close()
        tx.close()
        server, sp = await loop.create_datagram_endpoint(lambda: Proto(echo=True),
                                                         local_addr=("127.0.0.1", 0))
        client, cp = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
        client.set_write_buffer_limits(high=1000, low=100)
        for i in range(400):
            client.sendto(b"%04d" % i + bytes(96), server.get_extra_info("sockname"))
        await asyncio.sleep(5)
        say("W15 proactor burst", f"400 datagrams queued at once with limits 1000/100: "
            f"write buffer after 5 s {client.get_write_buffer_size()}, {len(sp.got)} reached "
            f"the echo server, errors {[type(e).__name__ for e in cp.errors][:3]}")
        client.close()
        server.close()
        if socket.has_ipv6:
            try:
                server, sp = await loop.create_datagram_endpoint(lambda: Proto(echo=True),
                                                                 local_addr=("::1", 0))
                client, cp = await loop.create_datagram_endpoint(Proto, local_addr=("::1", 0))
            except OSError as exc:
                say("W14 proactor IPv6 echo", f"no IPv6 endpoint: {exc}")
                return
            address = server.get_extra_info("sockname")
            client.sendto(b"full address", address)
            client.sendto(b"short form", address[:2])
            await asyncio.sleep(2)
            say("W14 proactor IPv6 echo", f"the echo server got {sp.got!r}; the client got "
                f"{cp.got!r} back")
            client.close()
            server.close()

    loop = asyncio.ProactorEventLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


PROBES = [skip_on_success, disconnect_ex, failed_submits, sends_and_close, reset_and_receives,
          cancelled_transmit_file, icmp_then_receive, proactor_datagrams]


def main() -> int:
    ntdll = ctypes.WinDLL("ntdll")
    if hasattr(ntdll, "wine_get_version"):
        ntdll.wine_get_version.restype = ctypes.c_char_p
        where = f"Wine {ntdll.wine_get_version().decode()}"
    else:
        where = "not under Wine"
    print(f"Windows CPython {sys.version.split()[0]}; {where}", flush=True)
    failed = 0
    for probe in PROBES:
        try:
            probe()
        except Exception as exc:   # one probe's surprise must not hide the others
            failed += 1
            print(f"{probe.__name__}: probe failed: {type(exc).__name__}: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
