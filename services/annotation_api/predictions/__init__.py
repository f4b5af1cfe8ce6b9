"""Predictions: model results per task and model version, written one at a time or in bulk."""
