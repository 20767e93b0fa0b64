"""Test classes that run CPython's loop-class-bound test templates on iocploop.

Several test_asyncio modules hard-code a loop class (asyncio.SelectorEventLoop,
asyncio.ProactorEventLoop) in their concrete TestCase classes, so the policy
hook alone never puts iocploop under them.  For the iocploop target the worker
calls add_iocploop_classes(module) after importing a module: it defines one
subclass per template whose loop factory is asyncio.new_event_loop() (which the
hook makes an iocploop loop), with __module__ set to the test module and bound
as a module attribute, so unittest collects it and the report shows it under
that module (test.test_asyncio.test_events.IocploopEventLoopTests.test_...).
The stock classes stay (they run on asyncio's own loops on both targets).

REFERENCES maps each generated class to the stock classes whose results on the
asyncio target are the oracle for the same test method: the worker writes them
into each result ("reference"), and peer/report.py fails the run when one of
them passed there and the iocploop test did not.
"""
from __future__ import annotations

import asyncio
import sys

WINDOWS = sys.platform == "win32"
PKG = "test.test_asyncio."


def _new_loop(self):
    return asyncio.new_event_loop()


def _setup_with_new_loop(base_setup):
    """setUp that runs `base_setup` (usually test_utils.TestCase.setUp) and
    then makes self.loop an iocploop loop, for classes that build their loop
    in setUp instead of through a factory method."""
    def setUp(self):
        base_setup(self)
        self.loop = asyncio.new_event_loop()
        self.set_event_loop(self.loop)
    return setUp


# generated class (full id prefix) -> stock classes on the asyncio target to compare with
REFERENCES: dict[str, list[str]] = {}


def _define(module, name: str, bases: tuple, namespace: dict, references: list[str]) -> None:
    namespace = dict(namespace, __module__=module.__name__,
                     __qualname__=name,
                     __doc__=f"{references[0] if references else 'stock'} template on iocploop")
    cls = type(name, bases, namespace)
    setattr(module, name, cls)
    REFERENCES[f"{module.__name__}.{name}"] = [f"{module.__name__}.{r}" for r in references]


def _events(m):
    from test.test_asyncio import utils as test_utils
    refs = ["ProactorEventLoopTests", "SelectEventLoopTests"] if WINDOWS else ["EPollEventLoopTests"]
    _define(m, "IocploopEventLoopTests",
            (m.EventLoopTestsMixin, m.SubprocessTestsMixin, test_utils.TestCase),
            {"create_event_loop": _new_loop}, refs)


def _factory_template(template: str):
    def add(m):
        from test.test_asyncio import utils as test_utils
        refs = ["ProactorEventLoopTests", "SelectEventLoopTests"] if WINDOWS else ["EPollEventLoopTests"]
        _define(m, "IocploopEventLoopTests", (getattr(m, template), test_utils.TestCase),
                {"create_event_loop": _new_loop}, refs)
    return add


def _new_loop_subclass(name: str, linux_base: str, windows_base: str):
    """Subclass the platform's concrete class (it may carry platform-only
    tests, e.g. test_start_unix_server_1) and replace its new_loop()."""
    def add(m):
        base = windows_base if WINDOWS else linux_base
        _define(m, name, (getattr(m, base),), {"new_loop": _new_loop}, [base])
    return add


def _subprocess(m):
    from test.test_asyncio import utils as test_utils
    if WINDOWS:
        _define(m, "IocploopSubprocessTests", (m.SubprocessProactorTests,),
                {"setUp": _setup_with_new_loop(test_utils.TestCase.setUp)},
                ["SubprocessProactorTests"])
    else:
        # iocploop waits for children through pidfds: no child watcher attached.
        _define(m, "IocploopSubprocessTests", (m.SubprocessMixin, test_utils.TestCase),
                {"setUp": _setup_with_new_loop(test_utils.TestCase.setUp)},
                ["SubprocessPidfdWatcherTests", "SubprocessThreadedWatcherTests"])


def _unix_events(m):
    from test.test_asyncio import utils as test_utils
    _define(m, "IocploopUnixSocketTests", (m.SelectorEventLoopUnixSocketTests,),
            {"setUp": _setup_with_new_loop(test_utils.TestCase.setUp)},
            ["SelectorEventLoopUnixSocketTests"])


def _windows_events(m):
    from test.test_asyncio import utils as test_utils
    _define(m, "IocploopProactorTests", (m.ProactorTests,),
            {"setUp": _setup_with_new_loop(test_utils.TestCase.setUp)}, ["ProactorTests"])


ADDERS = {
    PKG + "test_events": _events,
    PKG + "test_sendfile": _factory_template("SendfileTestsBase"),
    PKG + "test_sock_lowlevel": _factory_template("BaseSockTestsMixin"),
    PKG + "test_server": _new_loop_subclass("IocploopStartServerTests",
                                            "SelectorStartServerTests", "ProactorStartServerTests"),
    PKG + "test_buffered_proto": _new_loop_subclass("IocploopBufferedProtocolTests",
                                                    "BufferedProtocolSelectorTests",
                                                    "BufferedProtocolProactorTests"),
    PKG + "test_sslproto": _new_loop_subclass("IocploopStartTLSTests",
                                              "SelectorStartTLSTests", "ProactorStartTLSTests"),
    PKG + "test_subprocess": _subprocess,
    PKG + "test_unix_events": _unix_events,        # the module skips itself on Windows
    PKG + "test_windows_events": _windows_events,  # the module skips itself off Windows
}


def add_iocploop_classes(module) -> list[str]:
    """Add this module's iocploop classes; returns their names."""
    adder = ADDERS.get(module.__name__)
    if adder is None:
        return []
    before = set(REFERENCES)
    adder(module)
    return sorted(k.rpartition(".")[2] for k in set(REFERENCES) - before)
