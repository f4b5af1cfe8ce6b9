"""Projects: a label config plus the settings and counters Label Studio clients read."""
