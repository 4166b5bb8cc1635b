"""dlrun: a config-driven experiment runner for the models of Dive into Deep Learning."""

__version__ = "0.1.0"
