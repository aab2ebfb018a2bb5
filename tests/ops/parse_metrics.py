"""Parses Prometheus text from standard input with prometheus_client's own parser and
prints every sample as JSON: [{"name", "labels", "value"}]. Used by tests/it/ops.rs."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
json.dump(samples, sys.stdout)
