"""mtlrun: a Hydra-driven experiment runner for multi-task learning research."""

__version__ = "0.1.0"
