"""The fault-injection suite (issue 8): a real deployment on loopback, a seeded fault schedule, exact verification.

``python -m tests.chaos --duration 120 --seed N`` runs it; ``test_chaos.py``
is the pytest entry CI runs.  Modules: ``writers`` (numbered lines, rotation),
``deployment`` (sshd, collectors, agents as processes), ``faults`` (the
schedule and the rogue client), ``verify`` (every line exactly once),
``report`` (the summary line), ``runner`` (the whole run).
"""
