"""The results: a table on stdout, target checks, a JSON file and a PNG chart."""

import json
import shutil
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # in .gitignore

# The targets of DESIGN 6 and issue 18, checked on every run (a MISS is
# reported, never an error: a slow machine must not fail `make bench`).
# "The floor" is the one-statement floor (bench/onestatement.py); the
# engine's SQL is shown beside it, never a target.
MIN_FLOOR_RATIO = {"mixed-1000": 0.6, "mixed-100": 0.5, "resync-1000": 0.7}  # service / floor
MAX_P95_MS = 120.0  # mixed-1000, per request, at 2 clients
MIN_RESYNC_SPEEDUP = 1.5
MIN_RELATIONS_SHARE = 0.85  # tags and companies cost at most 15% of mixed-1000's throughput
MAX_TASK_SUBMIT_S = 2.0  # the 202 of a 100,000-row task (issue: batch tasks)
MIN_TASK_SHARE = 1.0  # a task applies at least as fast as the synchronous door
MIN_IMPORT_SHARE = 0.8  # `contactsync import` of a CSV, end to end, vs the synchronous door (issue 17)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and PASS or MISS."""
    service, mixed = results["service"], results["service"]["mixed-1000"]
    resync_speedup = service["resync-1000"]["contacts_per_s"] / mixed["contacts_per_s"]
    relations_share = service["relations-1000"]["contacts_per_s"] / mixed["contacts_per_s"]
    task = results["tasks"]["one-task-one-worker"]
    task_share = task["contacts_per_s"] / mixed["contacts_per_s"]
    import_share = results["command_import"]["contacts_per_s"] / mixed["contacts_per_s"]
    checks = [
        (f"{name} service/floor ratio", results["ratios"][name], f">= {minimum}",
         results["ratios"][name] >= minimum) for name, minimum in MIN_FLOOR_RATIO.items()]
    checks += [
        ("mixed-1000 p95 latency (ms)", mixed["p95_ms"], f"< {MAX_P95_MS:.0f}", mixed["p95_ms"] < MAX_P95_MS),
        ("resync-1000 / mixed-1000 throughput", resync_speedup, f">= {MIN_RESYNC_SPEEDUP}",
         resync_speedup >= MIN_RESYNC_SPEEDUP),
        ("relations-1000 / mixed-1000 throughput", relations_share, f">= {MIN_RELATIONS_SHARE}",
         relations_share >= MIN_RELATIONS_SHARE),
        ("task-100k submission (s)", task["submit_s"], f"< {MAX_TASK_SUBMIT_S:.0f}",
         task["submit_s"] < MAX_TASK_SUBMIT_S),
        ("task-100k apply / mixed-1000 throughput", task_share, f">= {MIN_TASK_SHARE}",
         task_share >= MIN_TASK_SHARE),
        ("import-100k CSV / mixed-1000 throughput", import_share, f">= {MIN_IMPORT_SHARE}",
         import_share >= MIN_IMPORT_SHARE),
    ]
    return [{"target": name, "value": round(value, 2), "goal": goal, "status": "PASS" if ok else "MISS"}
            for name, value, goal, ok in checks]


def latencies(summary: dict[str, Any]) -> str:
    return f"{summary['p50_ms']:.0f}/{summary['p95_ms']:.0f}"


def format_table(results: dict[str, Any]) -> str:
    """Service, engine's SQL and floor per scenario, the naive baseline and the target checks.

    contacts/s of each way; the service's latencies per request; the ratios
    service/floor (the targets), service/engine (HTTP, JSON, auth,
    validation) and engine/floor (what the engine spends beyond one statement).
    """
    header = (f"{'scenario':<15}| {'service':>8} | {'requests':>8} | {'p50 ms':>6} | {'p95 ms':>6} | "
              f"{'p99 ms':>6} | {'engine SQL':>10} | {'floor':>8} | {'svc/floor':>9} | "
              f"{'svc/engine':>10} | {'engine/floor':>12}")
    lines = [f"contacts/s at {results['seed']['contacts']:,} stored contacts, "
             f"{results['environment']['client_threads']} threads each way; floor: one statement per batch",
             header, "-" * len(header)]
    for name, s in results["service"].items():
        engine, floor = results["engine_sql"][name], results["floor"][name]
        lines.append(f"{name:<15}| {s['contacts_per_s']:>8,.0f} | {s['requests']:>8} | "
                     f"{s['p50_ms']:>6.1f} | {s['p95_ms']:>6.1f} | {s['p99_ms']:>6.1f} | "
                     f"{engine['contacts_per_s']:>10,.0f} | {floor['contacts_per_s']:>8,.0f} | "
                     f"{results['ratios'][name]:>9.2f} | {results['service_to_engine'][name]:>10.2f} | "
                     f"{results['engine_to_floor'][name]:>12.2f}")
    lines.append("ms per batch, p50 / p95, engine SQL | floor: " + "; ".join(
        f"{name} {latencies(results['engine_sql'][name])} | {latencies(results['floor'][name])}"
        for name in results["service"]))
    naive, speedup = results["naive"], results["speedup_over_naive"]
    lines += ["",
              f"naive row-by-row (batches of 1000, half new): {naive['contacts_per_s']:,.0f} contacts/s "
              f"({naive['requests']} batches, p50 {naive['p50_ms']:.0f} ms per batch)",
              f"set-based speed-up over naive, mixed-1000: floor x{speedup['floor']:.1f}, "
              f"engine SQL x{speedup['engine_sql']:.1f}, service x{speedup['service']:.1f}",
              "", "targets:"]
    lines += [f"  {t['status']:<4}  {t['target']:<38} {t['value']:>8.2f} (goal {t['goal']})"
              for t in results["targets"]]
    return "\n".join(lines)


def write_results(results: dict[str, Any], stamp: str) -> tuple[Path, Path]:
    """bench/results/bench-<stamp>.json and .png, copied to latest.json and latest.png."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"bench-{stamp}.json"
    png_path = RESULTS_DIR / f"bench-{stamp}.png"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    draw_chart(results, png_path)
    shutil.copyfile(json_path, RESULTS_DIR / "latest.json")
    shutil.copyfile(png_path, RESULTS_DIR / "latest.png")
    return json_path, png_path


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Throughput (service, engine SQL, floor, naive) and service latency percentiles, side by side."""
    import matplotlib  # late: only the report needs it, and it is slow to import

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    names = list(results["service"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.27
    positions = range(len(names))
    ways = ((-width, "service", "service (HTTP)"), (0, "engine_sql", "engine SQL (direct)"),
            (width, "floor", "floor (one statement)"))
    for offset, key, label in ways:
        left.bar([p + offset for p in positions], [results[key][n]["contacts_per_s"] for n in names],
                 width, label=label)
    left.axhline(results["naive"]["contacts_per_s"], color="grey", linestyle="--",
                 label="naive row-by-row (mixed-1000)")
    left.set_xticks(list(positions), names)
    left.set_ylabel("contacts/s")
    left.set_title("Throughput, 2 client threads")
    left.set_ylim(top=left.get_ylim()[1] * 1.25)  # room for the legend above the bars
    left.legend(loc="upper left", fontsize="small")

    for offset, p in zip((-width / 1.5, 0, width / 1.5), (50, 95, 99), strict=True):
        right.bar([x + offset for x in positions], [results["service"][n][f"p{p}_ms"] for n in names],
                  width / 1.5, label=f"p{p}")
    right.axhline(MAX_P95_MS, color="red", linestyle=":",
                  label=f"p95 target ({MAX_P95_MS:.0f} ms, mixed-1000)")
    right.set_xticks(list(positions), names)
    right.set_ylabel("ms per request")
    right.set_title("Service latency")
    right.set_ylim(top=right.get_ylim()[1] * 1.3)
    right.legend(loc="upper left", fontsize="small", ncol=2)

    fig.suptitle(f"contactsync bench {results['timestamp']} ({results['seed']['contacts']:,} contacts, "
                 f"{results['environment']['cpus']} CPUs, "
                 f"PostgreSQL {results['environment']['postgres']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
