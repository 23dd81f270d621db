"""What is asked for: the committed requirements file, the runtime overlay, the host's own packages."""
