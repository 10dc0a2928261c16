"""The edge: the proxy process only. It resolves each request's account, looks up its home
region in the registry, and forwards the request to a healthy store of that region, never
another.

The request path (``pipeline.serve`` lists its steps in order)::

    pipeline.py     the one path of a request, as plain named steps
    exchange.py     the exchange record and the Sink a front end answers through
    api_paths.py    which API operation a path is, and which raw targets are refused
    resolve.py      the account, from the Host or the ``an`` query parameter
    registry/       the account registry, read-only, cached, kept fresh (its own map)
    auth.py         app key and token; user_token.py: ``VtexIdclientAutCookie`` JWTs
    ratelimit.py    per-account token buckets
    body.py         the request body, bounded
    routing.py      the routing decision and retry policy (pure): home region or a refusal
    proxy.py        the forwarder: the signed assertion, one attempt per instance
    headers.py      which headers cross, in each direction
    upstream.py     each region's instances, their health, one connection pool each
    wire/           all the HTTP/1.1 on the wire, behind one door (its own map)
    errors.py       the one exception tree, and the one place an error becomes JSON

Around it::

    app.py          wires the above into an aiohttp.web application (shared state, start, stop)
    web_front.py    the same pipeline as an aiohttp.web handler (``listener = "web"``)
    server.py       one process per worker, sharing the port
    admin.py        /metrics, /healthz, /readyz, /registry/changes
    config.py       EdgeSettings, read and checked once; config_tables.py: regions and issuers
    metrics.py      the Prometheus metrics; logfilter.py: request bytes kept out of logs
    __main__.py     ``edge-router serve``, its only command

The operators' tools (``residency_ops``) and the developers' (``residency_dev``) import this
package; it imports neither, nor ``profile_store`` (``tests/test_import_boundary.py``).
"""
