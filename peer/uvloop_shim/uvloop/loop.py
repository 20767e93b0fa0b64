"""uvloop.loop is uvloop's Cython/libuv core.  The tests that import from it
(test_cython, test_libuv_api, test_fs_event) probe uvloop's internals, which
no other loop has: importing it skips the test."""
import unittest

raise unittest.SkipTest("uvloop.loop (uvloop's Cython/libuv internals) is not part of "
                        "the loop under test")
