#!/usr/bin/env python3
"""What one more gateway queue costs RabbitMQ per event (docs/SCALING.md).

Publishes N transient 64-byte events to a topic exchange whose routing key is bound to
Q queues (Q = 1, then Q = 16), as Warren's dispatcher publishes a room's event to the
queues of the gateways that hold its members, while a consumer drains every queue with
automatic acks. RabbitMQ's CPU time (utime + stime of beam.smp from /proc) over each
run, divided by the copies delivered, gives the cost per routed copy; the difference
between the two runs, per extra queue. Everything it declares is under a unique prefix
and deleted at the end.

Usage: .local/venv/bin/python bench/broker_fanout.py [--events N]
(the venv of scripts/python-env.sh has pika). Prints one JSON line.
"""

import argparse
import json
import os
import threading
import time
import uuid

import pika

URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


def beam_pids():
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "beam.smp":
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        cmd = c.read()
                    # The machine's default node only, not a test cluster's.
                    if b"warren-c" not in cmd:
                        pids.append(pid)
        except OSError:
            continue
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run(queues, events, pids):
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    exchange = f"{prefix}.events"
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    ch.exchange_declare(exchange, "topic", auto_delete=False)
    names = []
    for i in range(queues):
        name = f"{prefix}.gw.{i}"
        # Gone a minute after its last consumer even if this script dies.
        ch.queue_declare(name, arguments={"x-expires": 60000})
        ch.queue_bind(name, exchange, "room.r.message")
        names.append(name)

    expected = queues * events
    got = [0]
    done = threading.Event()

    def consume():
        cconn = pika.BlockingConnection(pika.URLParameters(URL))
        cch = cconn.channel()
        cch.basic_qos(prefetch_count=1000)

        def on_message(_ch, _m, _p, _b):
            got[0] += 1
            if got[0] >= expected:
                done.set()

        for name in names:
            cch.basic_consume(name, on_message, auto_ack=True)
        deadline = time.time() + 300
        while not done.is_set() and time.time() < deadline:
            cconn.process_data_events(time_limit=0.2)
        cconn.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(1.0)
    body = b"x" * 64
    props = pika.BasicProperties(delivery_mode=1, content_type="application/json")
    before = cpu_seconds(pids)
    started = time.time()
    for _ in range(events):
        ch.basic_publish(exchange, "room.r.message", body, props)
    consumer.join()
    elapsed = time.time() - started
    after = cpu_seconds(pids)
    for name in names:
        ch.queue_delete(name)
    ch.exchange_delete(exchange)
    conn.close()
    return {
        "queues": queues,
        "events": events,
        "copies": got[0],
        "seconds": round(elapsed, 2),
        "rabbitmq_cpu_s": round(after - before, 2),
        "rabbitmq_us_per_copy": round((after - before) * 1e6 / max(1, got[0]), 2),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    pids = beam_pids()
    if not pids:
        raise SystemExit("no RabbitMQ (beam.smp) process found")
    one = run(1, args.events, pids)
    many = run(16, args.events, pids)
    extra = (many["rabbitmq_cpu_s"] - one["rabbitmq_cpu_s"]) * 1e6 / (15 * args.events)
    print(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "one_queue": one,
        "sixteen_queues": many,
        "rabbitmq_us_per_extra_queue_per_event": round(extra, 2),
        "rabbitmq_us_per_event_one_queue": round(one["rabbitmq_cpu_s"] * 1e6 / args.events, 2),
    }))


if __name__ == "__main__":
    main()
