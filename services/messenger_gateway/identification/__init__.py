"""Identifications: the model and its state machine, the unit of work, the use cases and the
background verifier."""
