"""The server-rendered web UI (issue 10), mounted in the API's FastAPI app (``mount``)."""
