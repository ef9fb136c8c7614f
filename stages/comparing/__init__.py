"""``tiekd compare``'s engine: reading run directories, grouping seeds, the table in its formats."""
