"""The web server of one chain: connect to the devices, subscribe once, serve until stopped (uvicorn)."""

from __future__ import annotations

import sys

import tango
import uvicorn

from ..chain_client import ChainClient
from ..chain_names import ChainNames
from ..shared_events import SharedSubscriptions
from .app import WebContext, create_app
from .config import WebConfig
from .live import LiveChain


def build_context(chain: ChainNames, web: WebConfig) -> WebContext:
    """Proxies, roots and the live view of ``chain`` (DevFailed when the Stitcher does not answer)."""
    client = ChainClient(chain)
    subscriptions = SharedSubscriptions(client.proxies)
    live = LiveChain(chain, subscriptions.listen, subscriptions.has_attribute)
    return WebContext(
        client,
        live,
        web,
        client.property_list("CalibrationRoots"),
        client.property_list("DataRoots"),
        subscriptions=subscriptions,
    )


def serve(chain: ChainNames, web: WebConfig) -> int:
    try:
        context = build_context(chain, web)
    except tango.DevFailed as exc:
        print(f"xrd-pipeline web: cannot reach the chain on {chain.tango_host}: {exc.args[0].desc.strip()}",
              file=sys.stderr)
        return 1
    logins = "read-only for everyone (no login configured)" if not web.logins else "writes need a login"
    print(
        f"xrd-pipeline web: serving {chain.stitcher} at {chain.tango_host} on http://{web.host}:{web.port}/ "
        f"({logins}; Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(context), host=web.host, port=web.port, log_level="warning"))
    try:
        server.run()
    finally:
        context.subscriptions.close()
    return 0 if server.started else 1
