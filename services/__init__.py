"""Threadbus services: one package per deployable, plus `core` for what they share."""
