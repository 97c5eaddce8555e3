"""The library under the harness: datasets and the data path, backbones, strategies, the training loop."""
# Each component that computes numbers carries its own version beside its code, and an artifact's key holds
# the versions of exactly the code it runs: see ``versions.py``.
