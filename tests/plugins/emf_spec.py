"""A checker for CloudWatch Embedded Metric Format documents.

It follows the published specification ("Specification: Embedded metric
format", Amazon CloudWatch user guide): the root holds ``_aws`` with a
millisecond ``Timestamp`` and a list of metric directives; a directive names
a namespace, dimension sets and metric definitions; every dimension and
metric a directive names is a member of the root, a dimension's value a
string, a metric's value a number or an array of at most 100 numbers; the
objects the specification defines hold no other members.
"""

from __future__ import annotations

from typing import Any

# CloudWatch's StandardUnit values.
UNITS = frozenset(
    """
    Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes
    Terabytes Bits Kilobits Megabits Gigabits Terabits Percent Count
    Bytes/Second Kilobytes/Second Megabytes/Second Gigabytes/Second
    Terabytes/Second Bits/Second Kilobits/Second Megabits/Second
    Gigabits/Second Terabits/Second Count/Second None
    """.split()
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def emf_problems(document: Any) -> list[str]:
    """What makes ``document`` invalid EMF; empty when it is valid."""
    problems: list[str] = []
    if not isinstance(document, dict):
        return ["the root is not an object"]
    meta = document.get("_aws")
    if not isinstance(meta, dict):
        return ["the root has no _aws object"]
    if set(meta) - {"Timestamp", "CloudWatchMetrics"}:
        problems.append(f"_aws has other members: {sorted(meta)}")
    stamp = meta.get("Timestamp")
    # milliseconds since the epoch: a number of 13 digits for this century
    if not (isinstance(stamp, int) and 10**12 <= stamp < 10**13):
        problems.append(f"Timestamp is not epoch milliseconds: {stamp!r}")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*problems, "CloudWatchMetrics is not a non-empty array"]

    for directive in directives:
        if not isinstance(directive, dict):
            problems.append("a metric directive is not an object")
            continue
        if set(directive) - {"Namespace", "Dimensions", "Metrics"}:
            problems.append(f"a directive has other members: {sorted(directive)}")
        namespace = directive.get("Namespace")
        if not (isinstance(namespace, str) and 1 <= len(namespace) <= 255):
            problems.append(f"Namespace is not 1-255 characters: {namespace!r}")
        dimension_sets = directive.get("Dimensions")
        if not isinstance(dimension_sets, list):
            problems.append("Dimensions is not an array")
            dimension_sets = []
        for dimension_set in dimension_sets:
            if not isinstance(dimension_set, list) or len(dimension_set) > 30:
                problems.append(
                    f"a dimension set is not an array of <= 30: {dimension_set!r}"
                )
                continue
            for name in dimension_set:
                value = document.get(name) if isinstance(name, str) else None
                if not (isinstance(value, str) and value):
                    problems.append(
                        f"dimension {name!r} has no string value in the root"
                    )
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or not 1 <= len(metrics) <= 100:
            problems.append("Metrics is not an array of 1 to 100 definitions")
            metrics = []
        for definition in metrics:
            if not isinstance(definition, dict):
                problems.append("a metric definition is not an object")
                continue
            if set(definition) - {"Name", "Unit", "StorageResolution"}:
                problems.append(f"a definition has other members: {sorted(definition)}")
            name = definition.get("Name")
            if not (isinstance(name, str) and 1 <= len(name) <= 255):
                problems.append(f"a metric Name is not 1-255 characters: {name!r}")
                continue
            unit = definition.get("Unit", "None")
            if unit not in UNITS:
                problems.append(
                    f"metric {name} has unit {unit!r}, not a CloudWatch unit"
                )
            value = document.get(name)
            ok = _is_number(value) or (
                isinstance(value, list)
                and 1 <= len(value) <= 100
                and all(_is_number(v) for v in value)
            )
            if not ok:
                problems.append(
                    f"metric {name} has no numeric value in the root: {value!r}"
                )
    return problems
