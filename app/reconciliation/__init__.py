"""Federation reconciliation: WeChat Pay trade bills against donations, refunds and the ledger."""
