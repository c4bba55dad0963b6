"""Workshop mode: a roster in, an endpoint (or a key) per attendee, handouts out, teardown verified."""
