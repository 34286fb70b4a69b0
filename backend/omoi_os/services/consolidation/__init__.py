"""Memory consolidation: when it runs (triggers), what it runs on (scope), and the
job records that carry each decision to a worker."""
