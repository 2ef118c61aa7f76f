"""SQL kept as files: one named statement per `-- name: verb-noun` block.

All files are parsed when this module is imported (at start-up), so a
malformed file fails at boot, not on the first request that needs it.
"""

from pathlib import Path

SQL_DIR = Path(__file__).parent
NAME_MARKER = "-- name:"


def parse_queries(text: str, source: str = "<string>") -> dict[str, str]:
    """Split SQL text into {name: statement}, rejecting empty or duplicate blocks."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []

    def close_block() -> None:
        if name is None:
            return
        body = "\n".join(line for line in lines if not line.lstrip().startswith("--")).strip()
        if not body:
            raise ValueError(f"{source}: query {name!r} has no SQL")
        if name in queries:
            raise ValueError(f"{source}: query {name!r} is defined twice")
        queries[name] = body

    for line in text.splitlines():
        if line.startswith(NAME_MARKER):
            close_block()
            name = line[len(NAME_MARKER):].strip()
            lines = []
        elif name is not None:
            lines.append(line)
    close_block()
    return queries


def load_queries(directory: Path = SQL_DIR) -> dict[str, str]:
    """Load every named statement of every .sql file in `directory`."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, sql in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise ValueError(f"{path.name}: query {name!r} is also defined in another file")
            queries[name] = sql
    return queries


queries = load_queries()
