"""Conversion: clicks joined to orders, five attribution models, revenue, AOV, CPA and ROI."""

from .family import Conversion
from .shopper import Shopper

__all__ = ["Conversion", "Shopper"]
