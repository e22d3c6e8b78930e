"""Benchmarks of the library against the reference implementations; the library never imports
this package (it reads the experiment configs and PyTorch, which the library must not)."""
