"""Jinja2 templates for teacher, student and eval prompts, rendered with a content hash."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import jinja2

from distill.errors import DistillError

TEMPLATE_DIR = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # StrictUndefined: a typo in a template variable must fail loudly, not render "".
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


def template_source(name: str) -> str:
    """The template text plus the text of what it includes, so the hash changes with either."""
    path = TEMPLATE_DIR / name
    if not path.exists():
        known = ", ".join(sorted(p.name for p in TEMPLATE_DIR.glob("*.j2")))
        raise DistillError(f"unknown template '{name}': pick one of {known}")
    parts = [path.read_text()]
    if "include" in parts[0]:
        parts += [p.read_text() for p in sorted(TEMPLATE_DIR.glob("*.j2")) if p.name != name]
    return "\n".join(parts)


def template_hash(name: str) -> str:
    return hashlib.sha256(template_source(name).encode()).hexdigest()[:16]


def render(name: str, **variables: object) -> str:
    template_source(name)  # raises the one-line error for unknown names
    return _env().get_template(name).render(**variables).strip()
