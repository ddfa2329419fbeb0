"""forgery: train, explain and track detectors of AI-generated images."""

__version__ = "0.1.0"
