"""The chassis every tsunagi service stands on. Imports ``contracts`` only.

psycopg's C wait function blocks the whole eventlet hub, so every process that imports the
chassis selects the selector-based wait function before psycopg is first imported.
"""
import os

os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_selector")
