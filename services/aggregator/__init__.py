"""The aggregator: the ledger of orders, state changes and fills, with a per-user sequence.

rules    -- pure checks on an incoming update (fields, fills, overfill, cumulative figures)
ledger   -- the durable store (SQLite on one dedicated thread); the only writer of the ledger
hub      -- in-process live fan-out of committed updates, bounded per watcher
watch    -- replay-then-live merge for one watcher, gap-free across the switch
servicer -- thin gRPC adapter; app -- Config and build_app for the bootstrap
"""
