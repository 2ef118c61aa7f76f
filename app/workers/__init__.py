"""Long-running loops beside the web front: the webhook dispatcher and its
delivery code. They reach the database only through app/engine."""
