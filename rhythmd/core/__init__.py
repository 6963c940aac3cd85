"""The daemon's use cases, between the HTTP layer (``rhythmd.api``) and the store.

- :mod:`~rhythmd.core.ingest`: storing batches with their analysis (one transaction each, or
  one for several runs); :mod:`~rhythmd.core.ingest_queue` runs it off the event loop;
- :mod:`~rhythmd.core.analyzers`: the per-process analyzer cache (load, replay, save);
- :mod:`~rhythmd.core.diagnoses`: the analysis step of one batch;
- :mod:`~rhythmd.core.recommendations`: issue, cancel, expire, resolve, and the transitions;
- :mod:`~rhythmd.core.runs`, :mod:`~rhythmd.core.views`, :mod:`~rhythmd.core.access`.

Everything here is synchronous (SQLAlchemy Core) and runs in worker threads.
"""
