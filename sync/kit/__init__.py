"""The kit's sync role: an outbox of what the hub has not acknowledged, sent with tus."""
