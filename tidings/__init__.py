"""tidings: a self-hosted email newsletter and drip-campaign engine."""

__version__ = "0.1.0"
