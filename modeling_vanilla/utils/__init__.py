"""Shared low-level helpers: argument types, safe file reading and writing, the machine's hardware."""
