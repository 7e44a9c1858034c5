"""`distill view`: a local, read-only web app over one store (view/cli.py; pages in view/app.py)."""
