"""HTTP layer: FastAPI routers and pydantic schemas. Handlers call the service."""
