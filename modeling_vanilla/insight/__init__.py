"""Explanation: attention maps, step-by-step walks through a layer, the docs' figures."""
