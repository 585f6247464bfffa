"""Caverna: a brand's character bible, compiled into consistent images through any image model."""

__version__ = "0.1.0"
