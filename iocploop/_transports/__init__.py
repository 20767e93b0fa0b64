"""The transports: what a protocol is given, on the completion port.

    base.py      what every transport shares (protocol accessors, fatal
                 errors, the end of the peer's data) and what the socket
                 ones share (get_extra_info's socket, sockname and
                 peername, the teardown)
    tcp.py       TCPTransport (TCP and Unix stream sockets); how it reads
                 on each platform: tcp_linux.py, tcp_windows.py
    datagram.py  DatagramTransport (UDP and Unix datagram sockets); how it
                 receives: datagram_linux.py, datagram_windows.py
    pipes.py     the pipe transports (subprocess pipes, Windows named
                 pipes); their platform I/O: pipes_linux.py, pipes_windows.py

Their hot paths are compiled: _stream.pxi and _datagram.pxi, included in
the scheduler module (_scheduler.pyx), read and write these classes' slots
(_slots.pxi).  docs/architecture.md shows the layers.
"""
from .datagram import DatagramMethods, DatagramTransport
from .pipes import DuplexPipeTransport, ReadPipeTransport, WritePipeTransport
from .tcp import TCPTransport

__all__ = ["DatagramMethods", "DatagramTransport", "DuplexPipeTransport",
           "ReadPipeTransport", "TCPTransport", "WritePipeTransport"]
