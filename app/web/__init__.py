"""The HTTP front: Flask blueprints, one per resource, and the request plumbing
they share. No SQL here: every door calls app/engine."""
