"""The HTTP API: a FastAPI app over the same services the CLI and the workers use."""
