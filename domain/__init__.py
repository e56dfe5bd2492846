"""Parley's domain: conversations, messages, the rules that govern them and the events they record.

Imports nothing but the standard library and msgspec (checked by tests/unit/test_layers.py).
"""
