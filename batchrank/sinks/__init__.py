"""Sinks beyond files: stores that serving systems read the ranked lists from.

A sink receives the same ranked tables the output writer does (complete users, in order) and
stages what it publishes as a :class:`batchrank.storage.base.Staged`, so that the run's files
and every sink commit as one :class:`batchrank.storage.unit.CommitUnit`.
"""
