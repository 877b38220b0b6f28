"""socialpulse: live metrics for social selling and social commerce (a Faust application)."""

__version__ = "0.1.0"
