"""bioknow: how many bits of knowledge a language model stores, per parameter."""

__version__ = "0.1.0"
