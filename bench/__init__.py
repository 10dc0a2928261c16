"""Benchmarks: ``python -m bench`` (proxy overhead, end-to-end cost); ``bench/README.md``.

Running it:
    __main__      entry point: run or ``--rerender``, the report's settings and notes
    options       the command line, full and ``--smoke`` defaults
    runner        ``Bench``: every target at every load, in rounds; skipped/error rows
    e2e           edge -> Profile System -> DynamoDB Local vs direct store calls and the floor
What a case is and how it is measured:
    cases         ``Target``, ``LoadSpec``, ``CaseResult``, ``merge_rounds``
    measure       ``run_case`` (wrk, CPU, peak RSS, where the cores went)
    probes        the routing probe and per-request Prometheus counter deltas
    wrk           the generated Lua script and wrk's summary
    proc          child processes that always stop; /proc readers; CPU placement
The targets (context managers yielding a ``Target``):
    targets       static upstreams, direct, naive, ``served()``
    accounts      the bench accounts and the request mix
    nginx_target  nginx with a generated account -> region config
    edge_target   our edge, its config and registry on DynamoDB Local
    static_upstream  the fixed-response upstream (a process per region)
    naive_proxy   the naive baseline: plain aiohttp proxy, no routing (a process)
    store_floor   the store's CPU floor: its DynamoDB calls and nothing else (a process)
Judging and reporting:
    judge         ``Goal``, ``GoalOutcome``, ``select``, generic goal builders
    goals         the bench's goals (harness, edge, end to end, store floor)
    report        machine facts, ``Report``, Markdown and JSON
Apart:
    hotpath       the edge's per-request CPU without sockets (``python -m bench.hotpath``)
"""
