"""Benchmarks: `python -m bench {engine,fp16,service,training,coldstart,profile,report,all}`.

Performance is measured, never asserted: each command writes a JSON result (with the machine, the date,
the versions and the exact command) under `--out`, and `report` turns the JSON files into a markdown
table, a plot and the figures section of docs/PERFORMANCE.md. See docs/PERFORMANCE.md for the method.
"""
