"""Reliability and security figures: `python -m bench.reliability {badinput,overload,faults,soak,all}`.

Each experiment runs a real `uvicorn app.main:app` on 127.0.0.1 (bench/reliability/server.py) and writes
`<out>/<section>.json` (machine, date, versions, command, figures); `all` also writes `<out>/report.md`
and the figures section of docs/RELIABILITY.md. The bad-input corpus (corpus.py) is shared with
tests/reliability/.
"""
