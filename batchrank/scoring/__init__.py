"""Batch scoring stages: read, map ids, predict, top-k, write."""
