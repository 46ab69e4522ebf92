"""`nija chaos`: the mesh under load while a seeded fault schedule breaks it, then a reconciliation
of what clients were told, the ledger, and what the exchanges really executed (issue 11)."""
