"""Baking: an image taken after a stack's install steps ran once, with every per-instance state removed, so that a
machine booted from it runs the same user-data as a fast second run (install.py says what is install and what its
digest is; scrub.py what a baked image must not keep)."""
