"""Evaluation: text-generation metrics (:mod:`.metrics`) and the speed protocol (:mod:`.speed` and friends).

Nothing here is imported when fairseq loads the plugin with ``--user-dir``: import the modules you need
(``from fairseq_nar_plugins.evaluation import metrics``). ``scripts/score.py`` and ``scripts/benchmark.py`` are the
command-line front ends.
"""
