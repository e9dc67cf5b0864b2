#!/usr/bin/env python3
"""Reads rating events from a topic as another team's service would: with confluent-kafka,
not post-rate's code. Checks every message against docs/rating-event.schema.json (key, headers,
value) and prints one JSON line per message: {"key", "headers", "value"}.

usage: read_topic.py BROKERS TOPIC COUNT SCHEMA [TIMEOUT_SECS]
Exits 1 when a message breaks the contract or fewer than COUNT arrive in time."""
import json
import sys
import time
import uuid

import jsonschema
from confluent_kafka import Consumer


def main():
    brokers, topic, count, schema_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "outside-reader-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen, problems = 0, []
    deadline = time.monotonic() + timeout
    try:
        while seen < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                print(f"read_topic: {msg.error()}", file=sys.stderr)
                continue
            seen += 1
            key = msg.key().decode() if msg.key() is not None else None
            headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
            try:
                value = json.loads(msg.value().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                problems.append(f"offset {msg.offset()}: value is not UTF-8 JSON: {e}")
                continue
            for error in validator.iter_errors(value):
                problems.append(f"offset {msg.offset()}: {error.message}")
            if key != str(value.get("post_id")):
                problems.append(f"offset {msg.offset()}: key {key!r} is not the post id")
            if headers.get("event_type") != value.get("type"):
                problems.append(f"offset {msg.offset()}: event_type header {headers.get('event_type')!r}")
            if headers.get("schema_version") != str(value.get("schema_version")):
                problems.append(f"offset {msg.offset()}: schema_version header {headers.get('schema_version')!r}")
            if headers.get("content_type") != "application/json":
                problems.append(f"offset {msg.offset()}: content_type header {headers.get('content_type')!r}")
            print(json.dumps({"key": key, "headers": headers, "value": value}), flush=True)
    finally:
        consumer.close()
    for p in problems:
        print(f"read_topic: {p}", file=sys.stderr)
    if seen < count:
        print(f"read_topic: {seen} of {count} messages within {timeout}s", file=sys.stderr)
    sys.exit(1 if problems or seen < count else 0)


if __name__ == "__main__":
    main()
