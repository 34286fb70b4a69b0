"""HTTP routes. Thin: validate, call one service, shape the answer. Handlers are
plain functions, so FastAPI runs them on its thread pool, off the event loop."""
