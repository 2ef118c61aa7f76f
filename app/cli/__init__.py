"""The command-line front: operator commands on the Flask CLI. No SQL here."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the commands on the app."""
    # Imported here: app.cli.client, the HTTP client commands, needs neither.
    from app.cli import admin, serve

    app.cli.add_command(admin.init_db_command)
    app.cli.add_command(serve.serve_command)
    app.cli.add_command(admin.tenants_cli)
    app.cli.add_command(admin.tokens_cli)
    app.cli.add_command(admin.workflows_cli)
    app.cli.add_command(admin.tasks_cli)
