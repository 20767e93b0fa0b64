"""Each layer that differs between IOCP and io_uring keeps its platform
parts in a pair of modules, one per system, that the layer picks once at
import (the port: _port_linux / _port_windows; sendfile, subprocesses and
add_reader's readiness likewise; the transports: _transports/*_linux /
*_windows).  Only one of each pair runs on a given machine, so a name
added to one side alone would show only as an AttributeError on the other
system.  These tests import both sides here and compare what they offer."""
from __future__ import annotations

import importlib
import inspect
import sys

import pytest

# (Linux module, Windows module, {name on either side: the name compared})
# of each pair whose layer calls the same names on both sides.
PAIRS = [
    ("iocploop._port_linux", "iocploop._port_windows", {}),
    ("iocploop._sendfile_linux", "iocploop._sendfile_windows", {}),
    ("iocploop._subprocess_linux", "iocploop._subprocess_windows", {}),
    ("iocploop._readiness_linux", "iocploop._readiness_windows",
     {"EpollBackend": "Backend", "AfdBackend": "Backend"}),
]
# A helper one side needs for itself, which the layer does not call.
ONE_SIDED = {"bind_if_unbound"}


def parameters(fn) -> str:
    return str(inspect.signature(fn).replace(return_annotation=inspect.Signature.empty))


def interface(module) -> dict:
    """What module offers its layer (its __all__), with the parameters of
    each function and of the public methods of each class."""
    out = {}
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value):
            out[name] = {
                member: parameters(fn)
                for member, fn in vars(value).items()
                if inspect.isfunction(fn) and (not member.startswith("_") or member == "__init__")}
        elif inspect.isfunction(value):
            out[name] = parameters(value)
        else:
            out[name] = "constant"
    return out


@pytest.mark.parametrize("linux_name,windows_name,aliases", PAIRS)
def test_both_platform_parts_offer_the_same_interface(linux_name, windows_name, aliases):
    def named(module_name):
        found = interface(importlib.import_module(module_name))
        return {aliases.get(name, name): value for name, value in found.items()}

    linux, windows = named(linux_name), named(windows_name)
    used = set(linux) & set(windows)
    assert set(linux) - used <= ONE_SIDED, f"only {linux_name} has {set(linux) - used}"
    assert set(windows) - used <= ONE_SIDED, f"only {windows_name} has {set(windows) - used}"
    for name in sorted(used):
        assert linux[name] == windows[name], name


def test_the_port_uses_this_systems_part():
    from iocploop import _port

    expected = "iocploop._port_windows" if sys.platform == "win32" else "iocploop._port_linux"
    assert _port._platform.__name__ == expected


@pytest.mark.skipif(sys.platform == "win32", reason="checks what Linux refuses")
def test_the_linux_port_refuses_transmit_file_with_the_reason():
    from iocploop import _port_linux

    with pytest.raises(OSError) as info:
        _port_linux.transmit_file_handle(None)
    assert "sendfile(2)" in str(info.value)
