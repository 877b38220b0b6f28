"""Event and result contracts: pydantic models plus generated JSON Schema (``schemas/json``)."""
