"""State files of `import` and `export`: small JSON documents replaced atomically
(written to a temporary file beside them, flushed to disk, then renamed), so that
a run stopped at any instant leaves either the old state or the new one."""

import json
import os
from pathlib import Path
from typing import Any

import click

from app.cli.client.service import EXIT_BAD_INPUT


class StateError(click.ClickException):
    """A state file that cannot be used as it is."""

    exit_code = EXIT_BAD_INPUT


def read_state(path: Path) -> dict[str, Any] | None:
    """The state saved at `path`, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read the state file {path}: {exc.strerror}") from None
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("version") != 1:
        raise StateError(f"{path} is not a contactsync state file: delete it to start over.")
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state at `path` with `state`, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        json.dump(state, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def remove_state(path: Path) -> None:
    """The job is done: forget its state."""
    path.unlink(missing_ok=True)
