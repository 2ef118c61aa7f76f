"""Benchmark harness of contactsync: `make bench` (`python -m bench.run`).

Measures the service end to end through gunicorn, the engine alone (the
floor), a naive row-by-row baseline, and where the CPU of a request goes.
See bench/run.py for the order of the phases and bench/profile.py for the
CPU breakdown, which also runs alone (`python -m bench.profile`).
"""
