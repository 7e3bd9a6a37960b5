"""Batches over time: the engine that runs them, the events that record them, the store that keeps them,
and the reader that tells what a batch looks like now. No Flask: worker processes import this."""
