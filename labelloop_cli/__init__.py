"""``labelloop``: a command-line client of the annotation API's REST interface (nothing else)."""
