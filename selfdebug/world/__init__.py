"""A procedural world of small Python function problems (see generate.py, families.py)."""
