"""Data manager actions (``/api/dm/actions``): bulk operations on a selection of a project's tasks.

Other domains add actions with one line: decorate an async handler with
``@action("retrieve_tasks_predictions", title="Retrieve predictions", order=10)`` (``registry.py``) in a
module that is imported at start-up (e.g. your router module), and read the selection from
``ctx.selection`` (``selection.py``).
"""
