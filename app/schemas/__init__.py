"""marshmallow schemas: the wire contract of every door."""
