"""The library under the harness: datasets and the data path, backbones, strategies, the training loop."""

# The code salt: part of the key of every artifact (source models, fitted models, evaluations), so models
# and records made by older code are never reused. Bump it in any change that moves a number: training,
# evaluation, the data path, a backbone's definition or a strategy's fit.
CODE_SALT = "2026.11.30-2"
