"""Standalone diffusers host of the engine: ``python -m i2v_adapter generate``.

Imports diffusers lazily (through its modules), so the engine stays importable without it.
"""
