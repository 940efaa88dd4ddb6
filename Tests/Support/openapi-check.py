#!/usr/bin/env python3
"""Checks docs/openapi.yaml against a running master (Tests/IntegrationTests/OpenAPITests.swift runs it).

1. The routes: every API route the master's sources register (router.get/post/put("/v1/...", "/healthz",
   "/metrics")) is an operation of the description, and every operation of the description is a route.
2. The answers: a list of requests (below) is sent to the master; each must be an operation of the description,
   answer with a status the description lists for it, and, where the description gives a JSON schema for that
   status, a body the schema accepts. Every operation must be tried at least once.

Usage: openapi-check.py SPEC SOURCES_FOLDER FIXTURES_JSON
FIXTURES_JSON: {"base": URL, "tokens": {"viewer": ..., "submitter": ..., "operator": ...}, "build": ID (finished,
with a log), "log": NAME, "waiting": ID (a waiting build), "builder": NAME, "processor": NAME,
"upload_path": PATH (a small file not uploaded yet), "archseries": "DISTRO/SERIES/ARCH"}
Exit 0 when everything matches; each mismatch is printed."""

import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.request

import yaml

problems = []


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/")
        target = spec
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def validate(spec, schema, value, where):
    """The ways VALUE does not fit SCHEMA (the subset of JSON Schema the description uses)."""
    schema = resolve(spec, schema)
    found = []
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
                  "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                  "null": lambda v: v is None}
        if not any(checks[t](value) for t in allowed):
            return ["%s: %r is not %s" % (where, value if not isinstance(value, (dict, list)) else type(value).__name__,
                                          "/".join(allowed))]
    if "enum" in schema and value not in schema["enum"]:
        found.append("%s: %r is not one of %s" % (where, value, schema["enum"]))
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        found.append("%s: %r does not match %s" % (where, value, schema["pattern"]))
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                found.append("%s: no %s" % (where, key))
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                found += validate(spec, properties[key], item, "%s.%s" % (where, key))
            elif isinstance(schema.get("additionalProperties"), dict):
                found += validate(spec, schema["additionalProperties"], item, "%s.%s" % (where, key))
            elif properties and schema.get("additionalProperties") is not True:
                found.append("%s: %s is not described" % (where, key))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value[:50]):
            found += validate(spec, schema["items"], item, "%s[%d]" % (where, index))
    return found


def template_regex(path):
    return re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")) + "$")


def operation_for(spec, method, path):
    bare = path.split("?", 1)[0]
    # The most specific template: fewest parameters.
    matches = sorted((template.count("{"), template) for template in spec["paths"] if template_regex(template).match(bare))
    for _, template in matches:
        operation = spec["paths"][template].get(method.lower())
        if operation is not None:
            return template, operation
    return None, None


def routes_in_sources(folder):
    routes = set()
    for name in os.listdir(folder):
        if not name.endswith(".swift"):
            continue
        with open(os.path.join(folder, name)) as source:
            for method, path in re.findall(r'router\.(get|post|put|patch|delete)\("([^"]+)"', source.read()):
                if path.startswith("/v1/") or path in ("/healthz", "/metrics"):
                    routes.add((method.upper(), re.sub(r":([A-Za-z0-9_]+)", r"{\1}", path)))
    return routes


def main():
    spec_path, sources, fixtures_path = sys.argv[1:4]
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    with open(fixtures_path) as f:
        fx = json.load(f)

    # 1. Routes and operations, both ways (path parameter names may differ: compare by shape).
    def shape(path):
        return re.sub(r"\{[^}]+\}", "{}", path)
    described = {(method.upper(), shape(path)) for path, item in spec["paths"].items()
                 for method in item if method in ("get", "put", "post", "patch", "delete")}
    registered = {(method, shape(path)) for method, path in routes_in_sources(sources)}
    for method, path in sorted(registered - described):
        problems.append("route %s %s is not in the description" % (method, path))
    for method, path in sorted(described - registered):
        problems.append("operation %s %s is described but the master has no such route" % (method, path))

    # 2. Requests.
    with open(fx["upload_path"], "rb") as f:
        upload_bytes = f.read()
    upload = hashlib.sha256(upload_bytes).hexdigest()
    upload_name = os.path.basename(fx["upload_path"])
    t = fx["tokens"]
    b, w, builder, processor = fx["build"], fx["waiting"], fx["builder"], fx["processor"]
    submit = {"archseries": fx["archseries"], "source": "specpkg", "version": "1.0",
              "files": [{"name": upload_name, "sha256": upload, "size": len(upload_bytes)}]}
    join = {"name": "spec-join", "processors": [processor], "expires_in": 3600}
    tries = [
        ("GET", "/v1/status", None, None, 200), ("GET", "/v1/status?finished=true", t["viewer"], None, 200),
        ("GET", "/v1/status", "bdt_not_a_token", None, 403),
        ("GET", "/v1/processors", None, None, 200),
        ("GET", "/v1/builders", None, None, 200),
        ("GET", "/v1/builders/%s" % builder, None, None, 200), ("GET", "/v1/builders/no-such-builder", None, None, 404),
        ("GET", "/v1/builders/%s/history" % builder, t["viewer"], None, 200),
        ("GET", "/v1/builders/%s/history" % builder, None, None, 401),
        ("POST", "/v1/builders/%s/disable" % builder, t["operator"], {"reason": "openapi check"}, 200),
        ("POST", "/v1/builders/%s/disable" % builder, t["operator"], {"reason": ""}, 400),
        ("POST", "/v1/builders/%s/enable" % builder, t["operator"], None, 200),
        ("POST", "/v1/builders/%s/enable" % builder, t["viewer"], None, 403),
        ("POST", "/v1/builders/%s/manual" % builder, t["operator"], {"manual": False}, 200),
        ("POST", "/v1/builders/%s/clean" % builder, t["operator"], None, 200),
        ("POST", "/v1/builders/%s/clean" % builder, t["viewer"], None, 403),
        ("POST", "/v1/builders/no-such-builder/clean", t["operator"], None, 404),
        ("POST", "/v1/builders/%s/reset" % builder, t["operator"], None, 400),
        ("POST", "/v1/builders/%s/reset" % builder, t["viewer"], None, 403),
        ("POST", "/v1/builders/no-such-builder/reset", t["operator"], None, 404),
        ("POST", "/v1/builders/%s/manual" % builder, t["operator"], {"manual": "yes"}, 400),
        ("POST", "/v1/enrol", None, {"name": "new-box"}, 401),
        ("POST", "/v1/enrol", "bdj_" + "0" * 48, {"name": "new-box"}, 503),
        # Join tokens: admin only; made once by name, listed without secrets, taken back.
        ("POST", "/v1/join-tokens", None, join, 401),
        ("POST", "/v1/join-tokens", t["operator"], join, 403),
        ("POST", "/v1/join-tokens", t["admin"], join, 201),
        ("POST", "/v1/join-tokens", t["admin"], join, 409),
        ("POST", "/v1/join-tokens", t["admin"], dict(join, name="spec-join-long", expires_in=8 * 86400), 400),
        ("POST", "/v1/join-tokens", t["admin"], dict(join, name="spec-join-none", processors=[]), 400),
        ("POST", "/v1/join-tokens", t["admin"], dict(join, name="spec-join-mips", processors=["mips"]), 404),
        ("GET", "/v1/join-tokens", t["admin"], None, 200),
        ("GET", "/v1/join-tokens", t["operator"], None, 403),
        ("GET", "/v1/join-tokens", None, None, 401),
        ("DELETE", "/v1/join-tokens/spec-join", t["operator"], None, 403),
        ("DELETE", "/v1/join-tokens/spec-join", t["admin"], None, 204),
        ("DELETE", "/v1/join-tokens/spec-join", t["admin"], None, 404),
        ("GET", "/v1/builds?limit=1", None, None, 200), ("GET", "/v1/builds?status=NOPE", None, None, 400),
        ("GET", "/v1/builds/%d" % b, None, None, 200), ("GET", "/v1/builds/999999", None, None, 404),
        ("GET", "/v1/builds/%d/files/%s" % (b, fx["log"]), None, None, 200),
        ("GET", "/v1/builds/%d/files/nothing.deb" % b, None, None, 404),
        ("GET", "/v1/builds/%d/log" % b, None, None, 200), ("GET", "/v1/builds/%d/log?offset=-1" % b, None, None, 400),
        ("GET", "/v1/builds/999999/log", None, None, 404),
        ("PATCH", "/v1/builds/%d/attempts/1/log" % b, None, b"x", 401),
        ("GET", "/v1/queue/%s" % processor, None, None, 200),
        ("POST", "/v1/builds/%d/rescore" % w, t["operator"], {"score": 5000}, 200),
        ("POST", "/v1/builds/%d/rescore" % w, t["operator"], {"score": "high"}, 400),
        ("POST", "/v1/builds/%d/cancel" % w, t["operator"], None, 200),
        ("POST", "/v1/builds/%d/retry" % w, t["operator"], None, 200),
        ("POST", "/v1/builds/%d/cancel" % b, t["operator"], None, 409),
        ("POST", "/v1/builds/%d/retry" % w, None, None, 401),
        ("GET", "/v1/uploads/%s" % upload, t["submitter"], None, 404),
        ("PUT", "/v1/uploads/%s" % upload, t["submitter"], upload_bytes, 201),
        ("PUT", "/v1/uploads/%s" % upload, t["submitter"], upload_bytes, 200),
        ("PUT", "/v1/uploads/%s" % ("0" * 64), t["submitter"], upload_bytes, 422),
        ("GET", "/v1/uploads/%s" % upload, t["submitter"], None, 200),
        ("POST", "/v1/builds", t["submitter"], submit, 201),
        ("POST", "/v1/builds", t["submitter"], {"source": "x"}, 400),
        ("POST", "/v1/builds", t["viewer"], submit, 403),
        ("PUT", "/v1/builds/%d/attempts/1/files/x.deb" % b, None, b"x", 401),
        ("GET", "/v1/builds/%d/attempts/1/sources/x.dsc" % b, "not-the-key", None, 403),
        ("GET", "/v1/chroots/%s" % ("0" * 64), None, None, 404),
        ("GET", "/healthz", None, None, 200),
        ("GET", "/metrics", None, None, 200),
    ]
    tried = set()
    for method, path, token, body, expected in tries:
        template, operation = operation_for(spec, method, path)
        if operation is None:
            problems.append("%s %s: no such operation in the description" % (method, path))
            continue
        tried.add((method, shape(template)))
        headers = {}
        data = None
        if token:
            headers["Authorization"] = "Bearer " + token
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
            headers["Content-Type"] = "application/octet-stream"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(fx["base"] + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                status, content_type, text = answer.status, answer.headers.get("Content-Type", ""), answer.read()
        except urllib.error.HTTPError as error:
            status, content_type, text = error.code, error.headers.get("Content-Type", ""), error.read()
        where = "%s %s" % (method, path)
        print("%s -> %d" % (where, status))
        if status != expected:
            problems.append("%s: answered %d, the check expected %d (%s)" % (where, status, expected, text[:200]))
        described_answer = operation.get("responses", {}).get(str(status))
        if described_answer is None:
            problems.append("%s: answered %d, which the description does not list (%s)"
                            % (where, status, sorted(operation.get("responses", {}))))
            continue
        described_answer = resolve(spec, described_answer)
        schema = described_answer.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            if "application/json" not in content_type:
                problems.append("%s: %d is described as JSON, came as %r" % (where, status, content_type))
                continue
            problems.extend(validate(spec, schema, json.loads(text), where))
    for method, path in sorted(described - tried):
        problems.append("operation %s %s was never tried" % (method, path))

    for problem in problems:
        print("openapi: " + problem)
    print("openapi: %d requests, %d operations; %s" % (len(tries), len(described), "PASS" if not problems else "FAIL"))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
