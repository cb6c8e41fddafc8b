"""Acopio: the appliance core (configuration, catalog, state), its CLI and, later, its web UI."""

__version__ = "0.1.0"
