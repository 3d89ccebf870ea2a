"""Seed design vs our app, side by side on one machine, in one Ray session (``bench/compare.py``).

Modules, in the order a run uses them: :mod:`.config` (the chart scenario and the designs to deploy),
:mod:`.measure` (in-process figures, the services and the concurrency ladder), :mod:`.results` (typed
results and the figures derived from them), :mod:`.report` (Markdown table and plot), :mod:`.cli`.
"""
