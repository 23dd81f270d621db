"""Turning the desired set into a published generation: resolve, plan, build, verify, publish; ``sync`` runs it."""
