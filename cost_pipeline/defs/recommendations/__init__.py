"""The recommendations domain: savings found by re-pricing actual calls, and their weekly digest."""
