"""Where the vendored Label Studio editor lives (fetched by ``devstack.vendor_editor``)."""

from __future__ import annotations

from pathlib import Path

EDITOR_PACKAGE = "@heartexlabs/label-studio@1.4.0"
REPO_ROOT = Path(__file__).resolve().parents[3]
EDITOR_DIR = REPO_ROOT / ".vendor" / "label-studio-1.4.0"
EDITOR_FILES = {"build/static/js/main.js": "main.js", "build/static/css/main.css": "main.css"}
"""Tarball member -> file name served under /console/editor/."""
