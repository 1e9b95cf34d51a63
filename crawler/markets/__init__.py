"""When markets trade, so the collection spends nothing on closed ones."""
