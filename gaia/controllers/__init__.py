"""Background loops that drive the platform toward its stored spec."""
