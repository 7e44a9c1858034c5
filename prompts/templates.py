"""Jinja2 templates for teacher, student and eval prompts, rendered with a content hash."""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import jinja2

from core.errors import DistillError

TEMPLATE_DIR = Path(__file__).parent / "templates"
INCLUDE_RE = re.compile(r"include\s+[\"']([^\"']+)[\"']")


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # StrictUndefined: a typo in a template variable must fail loudly, not render "".
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=False)


def template_source(name: str) -> str:
    """The template text plus the texts it includes, so the hash changes with either (and only them)."""
    path = TEMPLATE_DIR / name
    if not path.exists():
        known = ", ".join(sorted(p.name for p in TEMPLATE_DIR.glob("*.j2")))
        raise DistillError(f"unknown template '{name}': pick one of {known}")
    text = path.read_text()
    included = sorted(set(INCLUDE_RE.findall(text)) - {name})
    return "\n".join([text, *(template_source(inc) for inc in included)])


def template_hash(name: str) -> str:
    return hashlib.sha256(template_source(name).encode()).hexdigest()[:16]


def render(name: str, **variables: object) -> str:
    """The template's text with surrounding whitespace trimmed (chat turns, teacher prompts)."""
    return render_exact(name, **variables).strip()


def render_exact(name: str, **variables: object) -> str:
    """The template's text as rendered, whitespace kept: evaluation prompts, whose exact text
    (a row's input may end in a space) is part of every cached request's key."""
    template_source(name)  # raises the one-line error for unknown names
    return _env().get_template(name).render(**variables)
