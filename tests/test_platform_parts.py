"""Each layer that differs between IOCP and io_uring keeps its platform
parts in a pair of modules, one per system, that the layer picks once at
import (the port: _port_linux / _port_windows; the transports:
_transports/*_linux / *_windows).  Only one of each pair runs on a given
machine, so a name added to one side alone would show only as an
AttributeError on the other system.  These tests import both sides here and
compare what they offer."""
from __future__ import annotations

import importlib
import inspect
import sys

import pytest

# (Linux module, Windows module) of each pair.
PAIRS = [
    ("iocploop._port_linux", "iocploop._port_windows"),
]


def parameters(fn) -> str:
    return str(inspect.signature(fn).replace(return_annotation=inspect.Signature.empty))


def interface(module) -> dict:
    """The public names of module that it defines itself, with the
    parameters of each function and of the public methods of each class."""
    out = {}
    for name, value in vars(module).items():
        if name.startswith("_") or (inspect.isclass(value) or inspect.isfunction(value)) \
                and value.__module__ != module.__name__:
            continue
        if inspect.isclass(value):
            out[name] = {
                member: parameters(fn)
                for member, fn in vars(value).items()
                if inspect.isfunction(fn) and (not member.startswith("_") or member == "__init__")}
        elif inspect.isfunction(value):
            out[name] = parameters(value)
        elif isinstance(value, (bool, int, str, tuple, frozenset, type(None))):
            out[name] = "constant"
    return out


@pytest.mark.parametrize("linux_name,windows_name", PAIRS)
def test_both_platform_parts_offer_the_same_interface(linux_name, windows_name):
    linux = interface(importlib.import_module(linux_name))
    windows = interface(importlib.import_module(windows_name))
    # A helper one side needs for itself may be extra; what the layer calls
    # must exist on both sides, with the same signature.
    used = set(linux) & set(windows)
    assert set(linux) - used == set(), f"only {linux_name} has these"
    extra_windows = set(windows) - used
    assert extra_windows <= {"bind_if_unbound"}, f"only {windows_name} has {extra_windows}"
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
