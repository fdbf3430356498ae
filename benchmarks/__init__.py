"""Benchmarks: nb_sessions' stores against AgentScope's whole-file sessions (``python -m benchmarks``)."""
