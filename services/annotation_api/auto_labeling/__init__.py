"""Auto-labeling: the ``predictions_to_annotations`` data manager action."""
