"""The `contactsync` console script: the operator commands of the Flask app under one
name, beside the client commands `import` and `export`.

`contactsync serve`, `init-db`, `tenants`, ... are whatever the app registers on
`app.cli` (app/cli/__init__.py), found when they are called, so a command added
there appears here too; `flask --app app ...` reaches the same commands.
`import` and `export` belong to the group itself: they talk to a running
service over HTTP and never build the app, so they need no database.
"""

from flask import Flask
from flask.cli import FlaskGroup

from app.cli.client.exporter import export_command
from app.cli.client.importer import import_command


def build_app() -> Flask:
    """The app, built only when an operator command is called (it opens the database)."""
    from app import create_app  # late: `import` and `export` never need it

    return create_app()


cli = FlaskGroup(
    name="contactsync",
    create_app=build_app,
    add_default_commands=False,  # `flask run` is a development server; `serve` is ours
    help="contactsync: the service's operator commands, and `import`/`export` against a "
         "running service over HTTP.",
)
cli.add_command(import_command)
cli.add_command(export_command)


def main() -> None:
    """Entry point of the console script."""
    cli.main(prog_name="contactsync")


if __name__ == "__main__":
    main()
