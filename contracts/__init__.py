"""The shared language of tsunagi: events, RPC payload schemas and error codes.

Every service package and the gateway import from here; this package imports nothing of ours.
"""
