"""Fakes that speak real protocols over real sockets, for tests and benches.

Import from the modules (``from tests.fakes.fake_backend import FakeBackend``): re-exporting here
would make ``python -m tests.fakes.fake_backend`` load the module twice.
"""
