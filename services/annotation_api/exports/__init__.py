"""Export: every task of a project with annotations and predictions, streamed in constant memory."""
