"""Which operator serves a number: the numbering plan, carrier data, the ported-numbers table
and its import."""
