"""The HTTP edge: FastAPI app, routes, and the translation of outcomes to status codes."""
