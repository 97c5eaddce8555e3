"""Measurement tools: the data path's and the train step's speed, and the regression gate."""
