"""The client side of the `contactsync` command: `import` and `export` against a
running service, over HTTP only (DESIGN 14). Nothing here opens the database."""
