"""Small shared utilities: the error tree and clocks."""
