"""Prometheus text exposition, parsed with Prometheus' own parser, for tests that read metrics."""

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

Samples = Counter[tuple[str, frozenset[tuple[str, str]]]]
"""Sample values by name and label set."""


def parse(text: str) -> Samples:
    """Every sample of a `/metrics` answer (repeated series add up)."""
    samples: Samples = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] += sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much `name` (with `labels`) changed between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)
