"""The chaos suite: the service's real processes under faults (workers SIGKILLed and
SIGSTOPped, the clock and the web SIGKILLed, Redis killed and restarted, providers failing,
slow and vanishing clients), each experiment repeatable from its seed and tallied against
the duplicate windows README "At most one send per notification" documents.

    python -m chaos [--quick] [--only NAME,...] [--seed N]

`chaos/experiments.py` says what each experiment does, `chaos/tally.py` how a duplicate is
classified; the table goes to stdout and `var/chaos/chaos.json`.
"""
