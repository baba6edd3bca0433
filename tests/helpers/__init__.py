"""Helpers for tests that are not tests themselves (pytest collects nothing here)."""
