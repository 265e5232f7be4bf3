"""Identity migration: legacy import, legacy login, passwords, risk-based login; secret questions."""
