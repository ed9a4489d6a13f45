"""jobs: job plumbing shared by queen and hive (registry, event log, SSE routes, client)."""
