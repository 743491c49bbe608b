"""Batch exports: recipes, a job plan, a ledger, runners and writers (see :mod:`core.export.runner`)."""
