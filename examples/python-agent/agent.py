#!/usr/bin/env python3
"""An agent in Python, with no mesh code at all: confluent-kafka (librdkafka) and the standard library.

It speaks the wire contract (docs/contract.md) directly, which is all it takes to join the mesh:

- consume `io.mesh.subtask.assigned` from `<prefix>work.<agent>` in the group `<prefix>worker.<agent>`
  (binary mode: `ce_*` headers; the value in the Confluent wire format: magic byte 0, a 4-byte schema
  id, the JSON `data`);
- publish `io.mesh.subtask.completed` to `<prefix>results`, keyed by the task id, with the lineage
  carried forward (correlationid, causationid, hopcount + 1, agentpath, a child span in traceparent)
  and the latest schema id of its subject from the registry;
- commit the offset only once the result is acknowledged (acks=all, idempotent producer);
- put what it cannot read on `<prefix>dlq` with the failure headers, so nothing stalls or is lost.

The result's id is derived from the assignment's, so a redelivered assignment (a crash before the
commit) yields the same result id, which the aggregator drops. With `npm start` running:

    python3 -m pip install confluent-kafka
    npx mesh topics init --agents py-title
    set -a; . ./.env.mesh; set +a; python3 examples/python-agent/agent.py
    npx mesh publish examples/python-agent/task.json

Variables: MESH_KAFKA_BROKERS, MESH_SCHEMA_REGISTRY_URL, MESH_TOPIC_PREFIX (default `mesh.`),
AGENT_NAME (default `py-title`).
"""

import hashlib
import json
import os
import secrets
import signal
import sys
import urllib.request
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaException, Producer

AGENT = os.environ.get("AGENT_NAME", "py-title")
PREFIX = os.environ.get("MESH_TOPIC_PREFIX", "mesh.")
BROKERS = os.environ["MESH_KAFKA_BROKERS"]
REGISTRY = os.environ["MESH_SCHEMA_REGISTRY_URL"].rstrip("/")
ASSIGNED = "io.mesh.subtask.assigned"
COMPLETED = "io.mesh.subtask.completed"


def log(message):
    print(f"{AGENT}: {message}", flush=True)


def latest_schema_id(subject):
    """The id of the latest contract of `subject` (the event type), from the registry."""
    url = f"{REGISTRY}/subjects/{subject}/versions/latest"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["id"]


def deterministic_id(cause, discriminator):
    """The mesh's name-based id (UUID version 5 layout over SHA-1 of cause NUL discriminator)."""
    digest = bytearray(hashlib.sha1(f"{cause}\0{discriminator}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def child_traceparent(parent):
    """The same trace, a new span: W3C trace context."""
    parts = (parent or "").split("-")
    trace = parts[1] if len(parts) == 4 and len(parts[1]) == 32 else secrets.token_hex(16)
    return f"00-{trace}-{secrets.token_hex(8)}-01"


def work(data):
    """The agent itself: the request's input.text in title case, with a count of its words."""
    text = str((data.get("input", {}).get("task") or {}).get("text", ""))
    return {"title": text.title(), "words": len(text.split())}


def result_of(headers, data, schema_id):
    """The `io.mesh.subtask.completed` record answering one assignment: key, value, headers."""
    cause = headers["ce_id"]
    task_id = data["taskId"]
    result = {
        "taskId": task_id,
        "stageId": data["stageId"],
        "nodeId": data["nodeId"],
        "agent": AGENT,
        "output": work(data),
        "usage": {"promptTokens": 0, "completionTokens": 0},
    }
    if "stage" in data:
        result["stage"] = data["stage"]  # how the aggregator joins the stage: copied as it came
    path = [a for a in headers.get("ce_agentpath", "").split(",") if a] + [AGENT]
    out = {
        "ce_specversion": "1.0",
        "ce_id": deterministic_id(cause, f"{COMPLETED}\0"),
        "ce_source": f"/agents/{AGENT}",
        "ce_type": COMPLETED,
        "ce_time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "ce_subject": task_id,
        "ce_datacontenttype": "application/json",
        "ce_dataschema": f"{REGISTRY}/schemas/ids/{schema_id}",
        "ce_correlationid": headers.get("ce_correlationid", task_id),
        "ce_causationid": cause,
        "ce_hopcount": str(int(headers.get("ce_hopcount", "0")) + 1),
        "ce_agentpath": ",".join(path),
        "ce_traceparent": child_traceparent(headers.get("ce_traceparent")),
        "ce_partitionkey": task_id,
        "content-type": "application/json",
    }
    value = b"\0" + schema_id.to_bytes(4, "big") + json.dumps(result).encode()
    return task_id.encode(), value, out


def dead_letter(message, headers, detail):
    """The record as it came, with the failure headers of mesh.dlq (dlq-triage records it)."""
    out = dict(headers)
    out.update(
        {
            "ce_meshfailure": "malformed_event",
            "ce_meshfailuredetail": detail[:500],
            "ce_meshfailedby": f"{AGENT}/{PREFIX}worker.{AGENT}",
            "ce_meshorigintopic": message.topic(),
        }
    )
    return message.key(), message.value() or b"", out


def send(producer, topic, key, value, headers):
    """Produces one record and waits until all in-sync replicas have it."""
    failures = []
    producer.produce(
        topic,
        key=key,
        value=value,
        headers=list(headers.items()),
        on_delivery=lambda error, _msg: error is not None and failures.append(error),
    )
    producer.flush(30)
    if failures or len(producer) > 0:
        raise KafkaException(failures[0] if failures else f"{topic}: not acknowledged in 30 s")


def main():
    schema_id = latest_schema_id(COMPLETED)
    consumer = Consumer(
        {
            "bootstrap.servers": BROKERS,
            "group.id": f"{PREFIX}worker.{AGENT}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": BROKERS, "enable.idempotence": True, "acks": "all"})
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    def assigned(_consumer, partitions):
        log(f"ready: {len(partitions)} partitions of {PREFIX}work.{AGENT}")

    consumer.subscribe([f"{PREFIX}work.{AGENT}"], on_assign=assigned)
    try:
        while not stopping:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (message.headers() or [])}
            value = message.value() or b""
            try:
                if headers.get("ce_type") != ASSIGNED or len(value) < 5 or value[0] != 0:
                    raise ValueError(f"not a {ASSIGNED} in the Confluent wire format")
                record = result_of(headers, json.loads(value[5:]), schema_id)
                topic, what = f"{PREFIX}results", "completed"
            except (ValueError, KeyError, TypeError) as error:
                # Bad input never stalls the partition and is never lost: it goes to mesh.dlq with
                # the reason, as the contract asks of every consumer.
                record = dead_letter(message, headers, f"{type(error).__name__}: {error}")
                topic, what = f"{PREFIX}dlq", "dead-lettered"
            send(producer, topic, *record)
            # Only now: the outcome is durable, so the assignment may be marked consumed.
            consumer.commit(message=message, asynchronous=False)
            log(f"{what} offset {message.offset()} ({headers.get('ce_id', 'no id')})")
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
