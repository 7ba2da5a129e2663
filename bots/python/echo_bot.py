#!/usr/bin/env python3
"""Warren echo bot: answers "!ping" with "pong" in the rooms it is given.

A whole Warren bot in one file, written from docs/BOTS.md alone, to show that any
language with an AMQP client can join. It runs as its own RabbitMQ account, and that
account's login is its user id in the rooms (the dispatcher marks it `bot: true`).

    .local/venv/bin/python bots/python/echo_bot.py \
        --amqp-url amqp://warren-bot:warren-bot@127.0.0.1:5672/%2f

What it does, in AMQP terms:
  - declares its queue <prefix>.bot.<name>.events and binds it to the topic exchange
    <prefix>.events with "room.<room>.message" for each of --rooms (its account's
    topic permissions must grant those keys; a wildcard would reach dm rooms too);
  - declares <prefix>.bot.<name>.replies, where the dispatcher answers its commands;
  - for a `message` event whose text is "!ping", publishes a `join` (once per room: a
    bot needs a role in a room to send there) and a `send` command to the direct
    exchange <prefix>.commands, routing key "shard.<fnv1a_32(room) % shards>",
    with user_id = its login and publisher confirms.
"""

import argparse
import json
import signal
import sys
import time
import uuid

import pika


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a: the hash Warren shards commands by."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def main() -> int:
    parser = argparse.ArgumentParser(description="Warren echo bot: !ping -> pong")
    parser.add_argument(
        "--amqp-url",
        default="amqp://warren-bot:warren-bot@127.0.0.1:5672/%2f",
        help="the bot's own RabbitMQ account (its login is the bot's user id)",
    )
    parser.add_argument("--prefix", default="warren", help="the deployment's amqp.prefix")
    parser.add_argument("--shards", type=int, default=16, help="the deployment's amqp.shards")
    parser.add_argument("--name", default="echo", help="names the bot's queues")
    parser.add_argument(
        "--rooms",
        default="general",
        help="comma-separated room ids to answer in (dm:a:b rooms are written dm~a~b in keys)",
    )
    args = parser.parse_args()
    rooms = [r.strip() for r in args.rooms.split(",") if r.strip()]
    if not rooms:
        parser.error("--rooms must name at least one room")

    params = pika.URLParameters(args.amqp_url)
    login = params.credentials.username
    events_queue = f"{args.prefix}.bot.{args.name}.events"
    replies_queue = f"{args.prefix}.bot.{args.name}.replies"

    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.confirm_delivery()
    # Outlives a short disconnection (60 s), but not an abandoned bot; at most 10k events.
    channel.queue_declare(
        events_queue, arguments={"x-expires": 60000, "x-max-length": 10000}
    )
    for room in rooms:
        key = "room." + room.replace(":", "~") + ".message"
        channel.queue_bind(events_queue, f"{args.prefix}.events", routing_key=key)
    channel.queue_declare(replies_queue, exclusive=True, auto_delete=True)
    joined = set()

    def command(kind: str, room: str, **fields) -> None:
        ref = uuid.uuid4().hex
        body = {
            "v": 1,
            "kind": kind,
            "room": room,
            "ref": ref,
            # The dispatcher replaces this with the bot's own identity anyway.
            "actor": {"id": login, "name": login, "bot": True},
            **fields,
        }
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            type=kind,
            message_id=uuid.uuid4().hex,
            timestamp=int(time.time()),
            user_id=login,
            reply_to=replies_queue,
            correlation_id=ref,
        )
        channel.basic_publish(
            exchange=f"{args.prefix}.commands",
            routing_key=f"shard.{fnv1a_32(room.encode()) % args.shards}",
            body=json.dumps(body),
            properties=properties,
            mandatory=True,
        )

    def on_event(ch, method, properties, body) -> None:
        try:
            event = json.loads(body) if properties.type == "message" else None
            if (
                event
                and not event["from"].get("bot")
                and event["text"].strip().lower() == "!ping"
            ):
                room = event["room"]
                if room not in joined:
                    command("join", room)
                    joined.add(room)
                command("send", room, text="pong")
                print(f"pong -> {room} (for {event['from']['id']})", flush=True)
        except (ValueError, KeyError) as err:
            print(f"skipping an event: {err!r}", file=sys.stderr, flush=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as err:
            print(f"the broker refused a command: {err!r}", file=sys.stderr, flush=True)
        ch.basic_ack(method.delivery_tag)

    def on_reply(ch, method, properties, body) -> None:
        frame = json.loads(body).get("frame", {})
        if frame.get("type") == "error":
            print(f"refused: {frame.get('code')}: {frame.get('message')}", file=sys.stderr, flush=True)

    channel.basic_qos(prefetch_count=32)
    channel.basic_consume(events_queue, on_event)
    channel.basic_consume(replies_queue, on_reply, auto_ack=True)
    signal.signal(signal.SIGTERM, lambda *_: channel.stop_consuming())
    print(f"echo bot {login!r} consuming {events_queue}", flush=True)
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        channel.stop_consuming()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
