"""A minimal Django project the server benchmarks run under gunicorn and uvicorn."""
