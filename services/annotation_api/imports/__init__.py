"""Bulk task import: one request, one transaction, validated in a tight loop, written with COPY."""
