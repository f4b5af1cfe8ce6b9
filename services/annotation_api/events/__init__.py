"""Online learning: annotation events (outbox rows) delivered to every backend of the project, in order."""
