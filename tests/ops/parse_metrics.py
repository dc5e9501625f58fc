"""Parse Prometheus text (stdin) with the official client's parser and print
its samples as JSON lines: {"name", "labels", "value"}; plus each family's
name and type. A text the parser refuses exits non-zero. Run by
tests/operations.rs."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    print(json.dumps({"family": family.name, "type": family.type}))
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
