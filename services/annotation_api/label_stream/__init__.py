"""Active learning: ``GET /api/projects/{id}/next`` serves the next task by the project's sampling."""
