"""Engagement: engagements, impressions, clicks, rates, followers and top posts."""

from .family import Engagement

__all__ = ["Engagement"]
