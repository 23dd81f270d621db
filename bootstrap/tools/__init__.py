"""The programs bootstrap runs: the one process runner, reading their output, and the backends
(pip-tools and pip, or uv) that resolve and install."""
