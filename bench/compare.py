"""This checkout against an earlier commit, side by side: `make compare REV=HEAD~1`.

`make bench` moves 5-10% from run to run on this kind of machine, so it
cannot tell a cut of a few percent from noise. This serves both trees at
once, each with its own gunicorn (2 sync workers) on one database, and
sends the same scenarios to each from 2 client threads in ABBA order
(REV, this, this, REV, ...), so that drift and whatever runs first fall on
both alike. Per scenario it prints each tree's contacts/s per round, their
ratio, and the workers' CPU per request read from /proc.

The earlier commit is checked out in a temporary git worktree and served
with this checkout's virtualenv: a commit with other pinned dependencies
is not comparable this way. The worktree is removed at the end.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.drive import BenchError, run_parallel, warm_up
from bench.seed import ROOT, close_database, open_database, prepare
from bench.service import Gunicorn, http_sender
from bench.workload import THREADS, Workload

DEFAULT_SCENARIOS = ("mixed-1000", "mixed-100", "resync-1000")
# Requests per tree and round, all threads together: about 2 s each at 2026's speeds.
REQUESTS_PER_ROUND = {"mixed-1000": 60, "mixed-100": 400, "resync-1000": 120, "relations-1000": 30}
DEFAULT_ROUNDS = 2  # of ABBA: each tree runs 2 x 2 times per scenario
ROUND_TIME_LIMIT_S = 30
WARMUP_PER_THREAD = 3
ORDER = ("base", "this", "this", "base")


@dataclass
class Side:
    """One tree under comparison: its server, and its client threads' workloads."""

    name: str
    server: Gunicorn
    workloads: dict[str, list[Workload]]
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)

    def per_thread(self, scenario: str, tenants: list, per_thread: int) -> list:
        """Each thread's next batches, encoded now, with its sender."""
        return [([b.encode() for b in workload.batches(scenario, per_thread)],
                 http_sender(self.server.base_url, tenants, scenario))
                for workload in self.workloads[scenario]]


def add_worktree(rev: str, parent: Path) -> Path:
    """A detached checkout of `rev` under `parent`."""
    path = parent / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), rev],
                   check=True)
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)


def run_round(side: Side, scenario: str, tenants: list) -> None:
    """One timed round of a scenario against one side, with its workers' CPU."""
    per_thread = side.per_thread(scenario, tenants, REQUESTS_PER_ROUND[scenario] // THREADS)
    cpu_before = side.server.worker_cpu_s()
    result = run_parallel(f"{side.name} {scenario}", per_thread, ROUND_TIME_LIMIT_S)
    cpu_ms = (side.server.worker_cpu_s() - cpu_before) * 1000 / max(1, result.requests)
    side.rates.setdefault(scenario, []).append(result.rate)
    side.cpu_ms.setdefault(scenario, []).append(cpu_ms)


def report(base: Side, this: Side, scenarios: list[str], rev: str) -> str:
    """The table: contacts/s of each side per round, their ratio, CPU per request."""
    lines = [f"contacts/s, 2 threads, {base.name} = {rev}, this = the working tree; "
             "rounds in ABBA order",
             f"{'scenario':<15}| {'side':<5}| {'mean':>8} | {'rounds':<36}| worker CPU ms/request"]
    for scenario in scenarios:
        for side in (base, this):
            rates = side.rates[scenario]
            lines.append(f"{scenario:<15}| {side.name:<5}| {sum(rates) / len(rates):>8,.0f} | "
                         f"{', '.join(f'{r:,.0f}' for r in rates):<36}| "
                         f"{sum(side.cpu_ms[scenario]) / len(side.cpu_ms[scenario]):.2f}")
        ratio = sum(this.rates[scenario]) / sum(base.rates[scenario])
        cpu = sum(this.cpu_ms[scenario]) / sum(base.cpu_ms[scenario])
        lines.append(f"{scenario:<15}| this/base: throughput {ratio:.3f}, worker CPU {cpu:.3f}")
    return "\n".join(lines)


def compare(rev: str, scenarios: list[str], rounds: int) -> str:
    """Serve both trees on the bench database and run the rounds."""
    database = open_database()
    servers: list[Gunicorn] = []
    with tempfile.TemporaryDirectory(prefix="contactsync-compare-") as scratch:
        tree = add_worktree(rev, Path(scratch))
        try:
            tenants = prepare(database)
            stamp = time.time_ns()  # new keys stay new across runs on a reused cluster
            sides = {}
            for name, root in (("base", tree), ("this", ROOT)):
                server = Gunicorn(database.url, Path(scratch) / f"gunicorn-{name}.log", tree=root)
                servers.append(server)
                sides[name] = Side(name, server, {s: [Workload(t, f"cmp-{name}-{s}-{stamp}")
                                                      for t in range(THREADS)] for s in scenarios})
            for side in sides.values():
                side.server.wait_ready()
                for scenario in scenarios:
                    warm_up(side.per_thread(scenario, tenants, WARMUP_PER_THREAD))
            for scenario in scenarios:
                for name in ORDER * rounds:
                    run_round(sides[name], scenario, tenants)
            return report(sides["base"], sides["this"], scenarios, rev)
        finally:
            for server in servers:
                server.stop()
            remove_worktree(tree)
            close_database(database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="the commit to compare with (HEAD~1, a hash, a branch)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help=f"comma-separated, of {', '.join(REQUESTS_PER_ROUND)} "
                             f"(default {','.join(DEFAULT_SCENARIOS)})")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"ABBA rounds per scenario (default {DEFAULT_ROUNDS})")
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in REQUESTS_PER_ROUND]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    try:
        print(compare(args.rev, scenarios, max(1, args.rounds)))
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
