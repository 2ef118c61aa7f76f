"""contactsync: a self-hostable HTTP API that upserts contacts in bulk."""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> "Flask":
    """Build the app: config from the environment (or `test_config`), pool, routes."""
    # Imported here, not at the top: `contactsync import` and `export`
    # (app/cli/client) import this package as their parent and need none of
    # the server, whose modules took 0.3 s of their start-up.
    from flask import Flask

    from app import cli, db
    from app import mcp as mcp_front
    from app.config import load_config
    from app.errors import register_error_handlers
    from app.web import (
        batch_tasks,
        catalogues,
        contact_reads,
        contacts,
        deletions,
        health,
        inro,
        intercom,
        openapi,
        rate_limits,
        request_log,
    )

    app = Flask(__name__, static_folder=None)  # no /static route: nothing is served from disk but /docs
    app.config.update(load_config())
    if test_config is not None:
        app.config.update(test_config)
    # Werkzeug enforces this while reading a body of unknown length (chunked).
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    app.json.sort_keys = False  # keep the documented field order in answers

    register_error_handlers(app)
    request_log.init_app(app)
    rate_limits.init_app(app)  # after request_log: a refused request is logged too
    db.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(contacts.bp)
    app.register_blueprint(contact_reads.bp)
    app.register_blueprint(deletions.bp)
    app.register_blueprint(catalogues.bp)
    app.register_blueprint(batch_tasks.bp)
    app.register_blueprint(inro.bp)
    app.register_blueprint(intercom.bp)
    openapi.init_app(app)
    cli.init_app(app)
    mcp_front.init_app(app)
    return app
