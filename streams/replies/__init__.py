"""Replies: reply latency, first response time, response rate, backlog and SLA breaches."""

from .family import Replies

__all__ = ["Replies"]
