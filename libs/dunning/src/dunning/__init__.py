"""Shared plumbing for the dunning services (one implementation, used by every service)."""
