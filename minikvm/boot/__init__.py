"""Loaders: put a guest image into memory and say how the CPU must start."""
