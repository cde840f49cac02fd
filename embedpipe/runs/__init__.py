"""What changes an index: a run's lifecycle (`pipeline`), its rules for documents and chunks
(`planning`), the exactly-once commit order (`commit`), what is learnt about a source before the
model loads (`preflight`), changes that need no encoder (`encoderless`), `embedpipe export`
(`export`), and comparing the ledger with the sink and repairing it (`reconcile`)."""
