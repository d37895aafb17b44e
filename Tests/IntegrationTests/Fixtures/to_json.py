#!/usr/bin/env python3
"""Parse configuration files the way their consumers do and print them as one JSON object, for Swift tests.

Usage: to_json.py FILE...

Prints {"FILE": value, ...}. By extension: .yaml/.yml -> the list of every YAML document in the file (PyYAML
safe_load_all; Kubernetes manifests hold several), .toml/.conf -> tomllib (containerd hosts.toml,
containers registries.conf), .json -> json. Exits 1 naming the file on a parse error.
"""

import json
import sys
import tomllib

import yaml


def parse(path):
    if path.endswith((".yaml", ".yml")):
        with open(path, encoding="utf-8") as f:
            return list(yaml.safe_load_all(f))
    if path.endswith((".toml", ".conf")):
        with open(path, "rb") as f:
            return tomllib.load(f)
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    raise ValueError("unknown file type")


def main():
    out = {}
    for path in sys.argv[1:]:
        try:
            out[path] = parse(path)
        except Exception as e:  # noqa: BLE001 - any parse failure is the answer
            print("%s: %s" % (path, e), file=sys.stderr)
            sys.exit(1)
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
