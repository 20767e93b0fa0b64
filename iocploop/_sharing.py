"""One object for equal values that many connections hold.

A server's connections have a few local addresses (one per address it
listens on) and, often, few peer hosts (a proxy, a load balancer); each
connection holding its own copy of the same tuple or host text costs a
10,000-connection server over a megabyte.  A SharedValues table hands out the
first object made for a key.  It is bounded: when full it starts over, which
only loses sharing, never a value.
"""
from __future__ import annotations

__all__ = ["SharedValues"]


class SharedValues:
    __slots__ = ("_table", "_max_size")

    def __init__(self, max_size: int):
        self._table: dict = {}
        self._max_size = max_size

    def get(self, key):
        """The value kept for key, or None."""
        return self._table.get(key)

    def keep(self, key, value):
        """Keep value for key and return it."""
        table = self._table
        if len(table) >= self._max_size:
            table.clear()
        table[key] = value
        return value
