"""Impression logs (schema v1): the one reader of log files and the validator."""
