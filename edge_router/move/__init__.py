"""Moving an account to another region (issue 17): ``edge-router account move``.

job.py             the job record and its phases
registry_state.py  the job's conditional registry writes (the flip among them)
store_api.py       the stores' transfer endpoints, signed with the ``move`` role
mover.py           the state machine: each phase idempotent, resumable after a crash
verify.py          digests and counts compared between the regions
progress.py        tqdm bar on a terminal, JSON lines otherwise
metrics_file.py    edge_account_moves_total as a Prometheus textfile
cli.py             ``edge-router account move | status | resume | abort``
"""
