"""Validates the OpenRPC document on standard input against the meta-schema at argv[1]
(draft 7), printing every error; exit 1 if there is any. Used by tests/it/ops.rs.

The meta-schema checks every `schema` in the document against the JSON Schema meta-schema
it names as https://meta.json-schema.tools, a draft 7 meta-schema: draft 7's own, which
jsonschema ships, stands in for it, so nothing is fetched."""
import json
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

schema = json.load(open(sys.argv[1]))
document = json.load(sys.stdin)
draft7 = Resource.from_contents(jsonschema.Draft7Validator.META_SCHEMA, default_specification=DRAFT7)
registry = Registry().with_resources(
    [("https://meta.json-schema.tools", draft7), ("https://meta.json-schema.tools/", draft7)]
)
validator = jsonschema.Draft7Validator(schema, registry=registry)
errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
for e in errors:
    print("/".join(map(str, e.path)) + ": " + e.message)
sys.exit(1 if errors else 0)
