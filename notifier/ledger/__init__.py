"""The ledger: everything kept in Redis. Notifications, events and records, turns,
rate limits, short links, and the embedded Redis for development."""
