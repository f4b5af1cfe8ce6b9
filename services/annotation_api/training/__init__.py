"""Training: ``POST /api/ml/{id}/train`` becomes a job whose worker sends START_TRAINING to the backend."""
