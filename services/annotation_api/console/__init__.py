"""The web console: a single-page app served at ``/`` that drives the public REST API."""
