"""The ledger: double-entry, append-only, hash-chained; donation lots, charity holds, daily Merkle digests."""
