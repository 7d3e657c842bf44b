"""Explanation: attention maps, layer walks and the docs' figures."""
