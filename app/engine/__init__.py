"""The core every front shares: a connection and plain values in, plain values
out, no Flask, no commit of its own. Only the engine runs queries."""
