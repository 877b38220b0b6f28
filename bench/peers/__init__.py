"""The count job on other engines, for comparison with socialpulse: see run.py."""

from bench.peers.run import PEERS, run_peer

__all__ = ["PEERS", "run_peer"]
