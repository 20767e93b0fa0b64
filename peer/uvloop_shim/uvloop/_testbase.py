"""uvloop's test utilities: the file fetched from the pinned uvloop sdist
(peer/uvloop_suite.py puts it at .cache/peer/uvloop-0.23.0/uvloop/_testbase.py,
or $IOCPLOOP_PEER_TESTBASE names it), executed unmodified in this module's
namespace.

Two platform adjustments follow it, outside the fetched code, for Windows:

* AIOTestCase's setUp/tearDown install asyncio.SafeChildWatcher on Python
  < 3.12, which Windows does not have (child watchers are a Unix notion);
  there the AIO flavour uses BaseTestCase's setUp/tearDown, which is all the
  rest of them do.
* BaseTestCase.tcp_server picks its default address by comparing the family
  with socket.AF_UNIX, which Windows CPython does not define: every TCP test
  that starts a threaded server died on that AttributeError before it touched
  a loop.  Without AF_UNIX, tcp_server gets the address its own non-Unix
  branch would choose, ('127.0.0.1', 0), so those tests run.  Tests that make
  AF_UNIX sockets themselves still fail there, as they should.
"""
import os as _os
import sys as _sys

_here = _os.path.dirname(_os.path.abspath(__file__))
_path = _os.environ.get("IOCPLOOP_PEER_TESTBASE") or _os.path.join(
    _here, _os.pardir, _os.pardir, _os.pardir, ".cache", "peer", "uvloop-0.23.0",
    "uvloop", "_testbase.py")
_path = _os.path.abspath(_path)
if not _os.path.isfile(_path):
    raise ImportError(f"uvloop's _testbase.py is not at {_path}: run peer/uvloop_suite.py, "
                      "which fetches it")
with open(_path, encoding="utf-8") as _f:
    _source = _f.read()
exec(compile(_source, _path, "exec"), globals())
del _f, _source

if _sys.platform == "win32" and not hasattr(asyncio, "SafeChildWatcher"):  # noqa: F821
    AIOTestCase.setUp = BaseTestCase.setUp  # noqa: F821
    AIOTestCase.tearDown = BaseTestCase.tearDown  # noqa: F821

if not hasattr(socket, "AF_UNIX"):  # noqa: F821 - from the fetched file
    _fetched_tcp_server = BaseTestCase.tcp_server  # noqa: F821

    def _tcp_server(self, server_prog, *, addr=None, **kwargs):
        if addr is None:
            addr = ("127.0.0.1", 0)
        return _fetched_tcp_server(self, server_prog, addr=addr, **kwargs)

    BaseTestCase.tcp_server = _tcp_server  # noqa: F821
