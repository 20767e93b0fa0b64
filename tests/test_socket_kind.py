"""_socket_kind reads a socket's family and type as plain ints: the same
values as socket.socket's properties, for every kind of socket the loop
meets, and the same errors for objects that are no socket."""
import socket
from asyncio import base_events

import pytest

from iocploop._socket_kind import family_of, kind_of, set_nodelay, type_of

KINDS = [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM)]
if socket.has_ipv6:
    KINDS.append((socket.AF_INET6, socket.SOCK_STREAM))
if hasattr(socket, "AF_UNIX"):
    KINDS.append((socket.AF_UNIX, socket.SOCK_STREAM))


@pytest.mark.parametrize("family, type_", KINDS)
def test_the_ints_equal_the_properties(family, type_):
    try:
        sock = socket.socket(family, type_)
    except OSError as exc:
        pytest.skip(f"this system makes no {family!r} {type_!r} socket: {exc}")
    with sock:
        sock.setblocking(False)   # the flag stays out of the type, as in socket.type
        assert family_of(sock) == sock.family and type(family_of(sock)) is int
        assert type_of(sock) == sock.type and type(type_of(sock)) is int
        assert kind_of(sock) == (sock.family, sock.type)
        # Keys made from either agree: the reuse pools are keyed by kind.
        assert {kind_of(sock): 1}[(sock.family, sock.type)] == 1


def test_an_object_that_looks_like_a_socket_is_read_through_its_attributes():
    class Lookalike:
        family = socket.AF_INET
        type = socket.SOCK_STREAM

    assert kind_of(Lookalike()) == (socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(AttributeError):
        family_of(object())


@pytest.mark.parametrize("type_, proto", [(socket.SOCK_STREAM, socket.IPPROTO_TCP),
                                          (socket.SOCK_STREAM, 0), (socket.SOCK_DGRAM, 0)])
def test_set_nodelay_does_what_asyncios_does(type_, proto):
    # asyncio sets TCP_NODELAY only when the protocol number says TCP (as
    # getaddrinfo's results do), and leaves every other socket alone.
    with socket.socket(socket.AF_INET, type_, proto) as ours, \
            socket.socket(socket.AF_INET, type_, proto) as theirs:
        set_nodelay(ours)
        base_events._set_nodelay(theirs)
        if type_ == socket.SOCK_STREAM:
            got = ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert got == theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert bool(got) == (proto == socket.IPPROTO_TCP)
