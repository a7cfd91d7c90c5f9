"""The analyses, one module per method of methods.md: dmd (§1), cmd (§2), prune (§3), conjugacy (§4), kga (§5)."""
