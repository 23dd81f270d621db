"""Bootstrap inside the host process: ``sys.path``, start-up, live switches, watching, runtime additions.

The host comes first: what runs in the host process at start-up uses the
standard library and bootstrap's store layer only, so bootstrap's own tools
never fix a version for the host's workflows. Heavier parts (settings, the
sync, watchdog) are handed off to explicitly, marked ``# slow path``.
"""
