"""The command-line front: operator commands on the Flask CLI. No SQL here."""
