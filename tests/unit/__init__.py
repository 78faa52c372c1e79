"""Unit tests: one rule or IO module at a time, on small inputs."""
