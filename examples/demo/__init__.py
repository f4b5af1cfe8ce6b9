"""``make demo``: the learning loop end to end — an annotator labels, the model learns, sampling chooses."""
