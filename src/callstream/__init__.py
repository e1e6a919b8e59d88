"""callstream: self-hosted Voice Insights Event Streams."""

__version__ = "0.1.0"
