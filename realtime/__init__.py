"""The transport: sockets, the per-process fan-out, the process runtime, broadcasts.

It has no models and names no domain; apps build on it and it never imports them.
"""
