"""`selfdebug demo`: LeDex at CPU scale on the procedural world (see cli.py)."""
