"""Termination notices from the notifier: the consumer of the stream and the use case that
applies them."""
