"""Threadbus contracts: wire objects, requests and events, as pydantic models with no I/O."""
