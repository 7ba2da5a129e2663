"""A Python `websockets` client against a Warren gateway, with permessage-deflate.

Used by the e2e test `a_python_websockets_client_agrees_compression`: connects with
the token given, prints what the gateway agreed, joins a room, sends one message long
enough to be compressed, and prints the event it gets back. Every line printed is one
JSON object; the test reads them. Exits non-zero when anything fails or takes longer
than the timeout.

    python deflate_client.py ws://127.0.0.1:8080/ws TOKEN ROOM
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

TIMEOUT_S = 15


async def main(url: str, token: str, room: str) -> None:
    deflate = ClientPerMessageDeflateFactory(client_max_window_bits=True)
    async with connect(
        f"{url}?token={token}", extensions=[deflate], compression=None
    ) as ws:
        agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        names = [type(e).__name__ for e in ws.protocol.extensions]
        print(json.dumps({"agreed": agreed, "extensions": names}), flush=True)
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        await ws.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
        text = "compressible words, " * 20
        sent = False
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "joined" and not sent:
                await ws.send(json.dumps({"type": "send", "room": room, "ref": "s", "text": text}))
                sent = True
            if frame.get("type") == "message" and frame.get("text") == text:
                print(json.dumps({"event": frame}), flush=True)
                return


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), TIMEOUT_S))
