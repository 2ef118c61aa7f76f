"""The MCP front for AI agents (DESIGN 13): empty until its issue lands."""
