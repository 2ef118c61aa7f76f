"""Benchmark harness of contactsync: `make bench` (`python -m bench.run`).

Measures the service end to end through gunicorn, the engine alone (its
SQL and its Python), the floor (one statement per batch, bench/onestatement.py),
a naive row-by-row baseline, and where the CPU of a request goes.
See bench/run.py for the order of the phases and bench/profile.py for the
CPU breakdown, which also runs alone (`python -m bench.profile`).
"""
