"""Adapters that record real job systems' jobs in a jobledger Ledger."""
