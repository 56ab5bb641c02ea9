"""One plain sentence of what a check measured, filled in from the numbers the check returned.

A check registers a one-line template (``register(..., measured="...")``); the report
fills it from the check's ``measurements`` (and its thresholds, by name), so the
sentence on the report's first screen never carries a number the run did not produce.

Template syntax, a small superset of :meth:`str.format` fields::

    {path}              the value at ``path``, formatted with str()
    {path:spec}         ... with a format spec, e.g. {max_rel_diff:.0e}
    {path|filter}       a filter applied first, e.g. {rays|len}
    {path|filter:spec}  e.g. {rays.R_at_smallest_H|absmax:.2g}
    {{ and }}           literal braces

``path`` is keys separated by dots.  A key applied to a list is applied to each item (so
``rays.holds`` is the list of every ray's ``holds``); a key containing ``*``, ``?`` or ``[``
is a glob that selects every matching key of a dict, in order (``*/literal.mean_diff``).
Filters see the leaves: nested lists (a key mapped over a list of lists) are flattened first.
Filters: ``len`` (items), ``count`` (true items), ``known`` (items that are not null),
``negative`` (numbers < 0), ``min``, ``max``, ``absmax`` (nulls skipped), ``join``
(each item formatted with ``spec``, joined by ", ").  A missing key, an empty ``min``/``max``
or a null value raises :class:`TemplateError`; the report then falls back to the first
sentence of the check's summary and says so.
"""

from __future__ import annotations

import fnmatch
import math
import re

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}|:]+)(?:\|([a-z]+))?(?::([^{}]*))?\}")


class TemplateError(ValueError):
    """A ``measured`` template that does not fit the measurements (the message names the field)."""


def _num(x):
    if isinstance(x, str) and x in ("inf", "-inf"):  # report.jsonable writes infinities as strings
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TemplateError(f"{x!r} is not a number")
    return x


def _numbers(items):
    return [_num(x) for x in items if x is not None]


def _absmax(items):
    vals = _numbers(items)
    if not vals:
        raise TemplateError("absmax of no numbers")
    return max(vals, key=abs)


def _extreme(fn):
    def f(items):
        vals = _numbers(items)
        if not vals:
            raise TemplateError(f"{fn.__name__} of no numbers")
        return fn(vals)
    return f


FILTERS = {
    "len": len,
    "count": lambda items: sum(1 for x in items if x),
    "known": lambda items: sum(1 for x in items if x is not None),
    "negative": lambda items: sum(1 for x in _numbers(items) if x < 0),
    "min": _extreme(min),
    "max": _extreme(max),
    "absmax": _absmax,
}


def _leaves(items):
    out = []
    for x in items:
        out.extend(_leaves(x) if isinstance(x, list) else [x])
    return out


def _resolve(namespace, path: str):
    value = namespace
    for key in path.split("."):
        value = _step(value, key, path)
    return value


def _step(value, key, path):
    if isinstance(value, list):
        return [_step(v, key, path) for v in value]
    if not isinstance(value, dict):
        raise TemplateError(f"{{{path}}}: {key!r} applied to {type(value).__name__}, not a mapping")
    if any(c in key for c in "*?["):
        return [v for k, v in value.items() if fnmatch.fnmatchcase(k, key)]
    if key not in value:
        raise TemplateError(f"{{{path}}}: no key {key!r} (keys: {sorted(value)[:12]})")
    return value[key]


def _format(value, spec, path):
    if value is None:
        raise TemplateError(f"{{{path}}} is null (not measured)")
    if isinstance(value, float) and math.isnan(value):
        raise TemplateError(f"{{{path}}} is NaN")
    if isinstance(value, str) and value in ("inf", "-inf") and spec:
        value = float(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"{{{path}:{spec}}}: {exc}") from None


def check_syntax(template: str) -> None:
    """Raise :class:`TemplateError` if ``template`` has a stray brace or an unknown filter."""
    rest = _FIELD.sub("", template)
    if "{" in rest or "}" in rest:
        raise TemplateError(f"stray brace in template {template!r}")
    for m in _FIELD.finditer(template):
        if m.group(2) and m.group(2) not in FILTERS and m.group(2) != "join":
            raise TemplateError(f"unknown filter {m.group(2)!r} in {m.group(0)}; known: {sorted(FILTERS) + ['join']}")


def fill(template: str, namespace: dict) -> str:
    """``template`` with every field replaced from ``namespace`` (see the module docstring)."""
    check_syntax(template)

    def one(m):
        if m.group(0) in ("{{", "}}"):
            return m.group(0)[0]
        path, flt, spec = m.group(1).strip(), m.group(2), m.group(3) or ""
        value = _resolve(namespace, path)
        if flt is None:
            return _format(value, spec, path)
        items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
        if items is None:
            raise TemplateError(f"{{{path}|{flt}}}: needs a list or mapping, got {type(value).__name__}")
        items = _leaves(items)
        if flt == "join":
            return ", ".join(_format(v, spec, path) for v in items)
        return _format(FILTERS[flt](items), spec, path)

    return _FIELD.sub(one, template)
