"""Tests that pass on stock asyncio and not on iocploop, on purpose.

peer/report.py fails the peer gate on any test that passed on stock asyncio
(in the reference run) and did not pass on iocploop; an entry here turns
that into an expected difference, shown in the report with its reason.
Only a difference that iocploop keeps by design, or that a test produces by
reading one loop's internals, belongs here: never a bug.

Entries: (suite, platform, pattern, reason).  suite is "cpython" or
"uvloop", platform "linux", "wine" or "*"; pattern is an fnmatch pattern over
the test id of the iocploop run (JUnit classname + "." + name, e.g.
"test.test_asyncio.test_events.IocploopEventLoopTests.test_internal_fds").
The report lists entries that matched nothing in a run, so stale ones show.
"""

EXPECTED: list[tuple[str, str, str, str]] = [
    ("cpython", "*",
     "test.test_asyncio.test_events.IocploopEventLoopTests.test_internal_fds",
     "skips itself on any loop that is not a selector loop (CPython's Proactor too): it "
     "counts the selector's internal file descriptors; its stock reference is a selector "
     "loop (Linux: epoll; Windows: select, beside the Proactor, which skips it too)"),
]
