"""Streaming dataflow hardware blocks (Amaranth 0.5), FINN-style: each block a small ``wiring.Component``
with ready/valid streams, simulated alone against a numpy model of itself before it joins a design."""
