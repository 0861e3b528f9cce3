"""The viewer's Jinja2 environment (autoescape on for every template), its page template, and the
Content-Security-Policy hash of its one script."""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from pathlib import Path

import jinja2

__all__ = ["TEMPLATES", "environment", "page_template", "script_hash"]

#: The folder of the viewer's templates, CSS and script.
TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every extension, so no template can opt out by its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}
    return env


@cache
def page_template() -> jinja2.Template:
    return environment().get_template("viewer.html.jinja")


@cache
def script_hash() -> str:
    """The CSP hash of the viewer's script, exactly as the page includes it."""
    script = environment().get_template("viewer.js").render()
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
