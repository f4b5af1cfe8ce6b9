"""Model versions of a project: the versions its predictions carry and its ML backends report."""
