"""The C interface is written three times: csrc/ioc_core.h (what the C
compiler sees), the cffi cdef in _cffi_build/build_core.py (what the Python
layer calls) and the function-pointer types in iocploop/_scheduler.pyx
(through which the compiled scheduler calls ioc_wait and ioc_wakeup).  cffi
checks struct layouts at import, but a function whose prototype drifts, or a
constant copied with a stale value, would only show as wrong behaviour.
These tests parse all three with cffi's own parser and compare them."""
from __future__ import annotations

import pathlib
import re
import sys

import cffi
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "_cffi_build"))
import build_core  # noqa: E402

# In the cdef only: what build_core.PREAMBLE defines inside the module and
# the callback cffi generates ("extern Python").
CDEF_ONLY = {"function ioc_py_sigint_event", "extern_python ioc_py_before_publish"}


def header_as_cdef() -> str:
    """csrc/ioc_core.h without comments, include guards, includes and the
    C++ wrapper: what cffi's parser accepts (it takes #define NAME number)."""
    text = (ROOT / "csrc" / "ioc_core.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    kept = []
    for line in text.splitlines():
        words = line.split()
        if line.startswith("#") and not (words[0] == "#define" and len(words) == 3):
            continue   # #ifndef/#include/#endif and the guard's bare #define
        if line in ('extern "C" {', "}"):
            continue   # the C++ wrapper (typedefs end with "} name;")
        kept.append(line)
    return "\n".join(kept)


def declarations(source: str) -> dict:
    ffi = cffi.FFI()
    ffi.cdef(source)
    return ffi._parser._declarations


def describe(decl) -> str:
    """A comparable text for one parsed declaration (structs by their fields)."""
    kind, _quals = decl
    fields = getattr(kind, "fldnames", None)
    if fields is not None:
        return str([(name, str(t)) for name, t in zip(fields, kind.fldtypes)])
    return str(kind)


HEADER = declarations(header_as_cdef())
CDEF = declarations(build_core.CDEF)


def test_header_parses_to_something():
    # The stripping above must leave the interface, not an empty file.
    assert "function ioc_wait" in HEADER
    assert "struct ioc_completion" in HEADER
    assert "macro IOC_COMPLETION_MORE" in HEADER


def test_same_names():
    assert sorted(set(HEADER) - set(CDEF)) == [], "in ioc_core.h, missing from the cdef"
    assert sorted(set(CDEF) - set(HEADER) - CDEF_ONLY) == [], "in the cdef, not in ioc_core.h"


@pytest.mark.parametrize("name", sorted(set(HEADER) & set(CDEF)))
def test_same_declaration(name):
    cdef_value = CDEF[name]
    if name.startswith("macro ") and cdef_value[0] == "...":
        return   # "#define X ...": cffi reads the header's value when it compiles
    assert describe(cdef_value) == describe(HEADER[name])


def test_scheduler_function_pointers_match_header():
    pyx = (ROOT / "iocploop" / "_scheduler.pyx").read_text()
    found = dict(re.findall(r"ctypedef int \(\*(ioc_\w+)_fn\)\(([^)]*)\)", pyx))
    assert set(found) == {"ioc_wait", "ioc_wakeup", "ioc_submit_recv", "ioc_submit_send",
                          "ioc_submit_poll", "ioc_submit_read"}
    for name, args in found.items():
        ffi = cffi.FFI()
        ffi.cdef("typedef struct ioc_core ioc_core; typedef struct ioc_op ioc_op;"
                 "typedef struct ioc_completion { uint64_t token; int64_t result;"
                 " uint32_t flags; } ioc_completion;"
                 f"int {name}({args});")
        assert describe(ffi._parser._declarations[f"function {name}"]) == \
            describe(HEADER[f"function {name}"]), name
