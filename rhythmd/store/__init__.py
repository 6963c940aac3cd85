"""Storage: one SQLAlchemy URL, from a SQLite file to a PostgreSQL shared by many daemons.

- :mod:`~rhythmd.store.store`: the :class:`Store` (engine, schema check, transactions);
- :mod:`~rhythmd.store.statements`: the compiled-statement driver; :mod:`~rhythmd.store.pipeline`:
  PostgreSQL pipeline mode;
- query modules, one function per operation: :mod:`~rhythmd.store.runs`,
  :mod:`~rhythmd.store.series`, :mod:`~rhythmd.store.points` (with the codec,
  :mod:`~rhythmd.store.chunks`), :mod:`~rhythmd.store.branches`,
  :mod:`~rhythmd.store.analysis`, :mod:`~rhythmd.store.recommendations`, ...

A hot read is sent when called and read when asked (a ``Deferred``'s ``.first()`` / ``.all()``,
or the decoding object the module returns): inside a pipelined PostgreSQL transaction the reads
a batch needs then share one round trip; elsewhere it reads at once.
"""

from rhythmd.store.store import Store

__all__ = ["Store"]
