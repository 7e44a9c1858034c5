"""Configs without secrets: what a run records, a report prints or a viewer shows."""
from __future__ import annotations

import re
from typing import Any

# A run's config is readable by anyone with the store: drop what looks like a credential. Names
# cannot tell a tokenizer's pad_token from a hub_token, so every `*_token` key goes.
SECRET_KEY = re.compile(r"(^|_)(api_?key|secret|password|passwd|credentials?|token|auth)($|_)", re.IGNORECASE)
SECRET_VALUE = re.compile(r"^(sk-|hf_|ghp_|github_pat_|xox[abp]-)[A-Za-z0-9_-]{16,}$")


def public_config(value: Any) -> Any:
    """`value` (dicts and lists, nested) without secret-looking keys or provider-key-shaped strings."""
    if isinstance(value, dict):
        return {k: public_config(v) for k, v in value.items()
                if not SECRET_KEY.search(str(k)) and not _secret_value(v)}
    if isinstance(value, (list, tuple)):
        return [public_config(v) for v in value if not _secret_value(v)]
    return value


def _secret_value(value: Any) -> bool:
    return isinstance(value, str) and bool(SECRET_VALUE.match(value))
