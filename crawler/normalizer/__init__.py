"""From raw source data to `Quote`s: the quote model, symbols, and page parsers."""
