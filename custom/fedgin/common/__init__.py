"""What every stage shares: checked option and configuration values (``options``) and checked output paths with
atomic writes (``outputs``).

The bottom of the package: it imports no other part of fedgin.
"""
