"""Moving an account to another region (issue 17): ``residency-ops account move``.

::

    job.py             the job record and its phases
    registry_state.py  the job's conditional registry writes (the flip among them)
    store_api.py       the stores' transfer endpoints, signed with the ``move`` role
    mover.py           the state machine: each phase idempotent, resumable after a crash
    copier.py          the bulk copy and the replay rounds the mover's phases run
    verify.py          digests and counts compared between the regions
    options.py         page sizes, parallelism and waits (tests shrink them)
    progress.py        tqdm bar on a terminal, JSON lines otherwise
    metrics_file.py    edge_account_moves_total as a Prometheus textfile

The command (``move | status | resume | abort``) is ``residency_ops/commands/account.py``.
"""
