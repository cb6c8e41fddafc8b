"""Command-line templates in settings: mount commands, ffmpeg inputs, gphoto2 ports.

A template is split like a shell would (shlex), never run by one, and each `{name}`
placeholder is filled inside its argument after splitting: a value that comes from a device
(a card label, a node name from udev) can never add, remove or split arguments.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class TemplateError(ValueError):
    pass


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def problem(template: str, known: Iterable[str], *, required: Iterable[str] = ()) -> str | None:
    """Why `template` cannot be used, or None: it must split, be non-empty, contain every
    `required` argument and use only `known` placeholders."""
    try:
        args = shlex.split(template)
    except ValueError as exc:
        return f"cannot be split into arguments ({exc})"
    if not args:
        return "must not be empty"
    for arg in required:
        if arg not in args:
            return f"must contain {arg}"
    return unknown_placeholders(template, known)


def unknown_placeholders(text: str, known: Iterable[str]) -> str | None:
    known = sorted(known)
    unknown = sorted(placeholders(text) - set(known))
    if unknown:
        names = ", ".join("{" + n + "}" for n in unknown)
        return f"unknown placeholder(s) {names} (known: {', '.join('{' + k + '}' for k in known)})"
    return None


def checker(known: Iterable[str], *, required: Iterable[str] = (), split: bool = True
            ) -> Callable[[str], str | None]:
    """A config check for a template setting (`split=False`: a plain string like a port)."""
    known, required = tuple(known), tuple(required)

    def check(value: str) -> str | None:
        if split:
            return problem(value, known, required=required)
        return unknown_placeholders(value, known)

    return check


def fill(template: str, values: Mapping[str, str]) -> list[str]:
    """Split `template`, then fill placeholders argument by argument."""
    try:
        args = shlex.split(template)
    except ValueError as exc:
        raise TemplateError(f"{template!r} cannot be split into arguments ({exc})") from None
    return [fill_text(arg, values, template) for arg in args]


def fill_text(text: str, values: Mapping[str, str], template: str | None = None) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not values.get(name):
            raise TemplateError(f"{template or text!r} needs {{{name}}}, which is not known here")
        return values[name]

    return _PLACEHOLDER.sub(value, text)
