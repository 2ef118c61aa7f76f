"""WSGI entry point: `gunicorn wsgi:app`.

Workers import this after fork (no --preload), so each opens its own pool.
"""

import gc

from app import create_app

# A batch of 1000 rows keeps tens of thousands of objects alive until its
# answer, nearly all freed by reference counting, not by the collector. At
# CPython's default (a collection each time allocations outnumber
# deallocations by 700) a request of 1000 rows ran about 15 collections, and
# a full one every ten requests: 1.4-2.5 ms of its 17-36 ms of CPU. With
# 20,000 it is one collection every few requests, 0.2-0.3 ms a request
# (in-process, docs/performance.md). Garbage in reference cycles waits a
# little longer for its collection, which is all this changes.
GC_YOUNG_THRESHOLD = 20_000

app = create_app()
# What start-up made (modules, the app, its pool) lives as long as the worker.
# Frozen, it is no longer walked by every full garbage collection: about 2 ms
# of CPU per batch of 1000 rows, measured in-process (docs/performance.md).
gc.freeze()
gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
