"""WSGI entry point: `gunicorn wsgi:app`.

Workers import this after fork (no --preload), so each opens its own pool.
"""

from app import create_app

app = create_app()
