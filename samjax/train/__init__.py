"""Training (``train.py``): the one trainer (``trainer``), the objectives it runs (``objectives``), what a
strategy trains (``strategy``), losses, optimizer and parameter rules, the train state on the mesh and its
gradient accumulation, config checks and metric writers.

May import everything below it: the model, data, weights, the run's model (``samjax.run``), the simulated
user and the evaluation. Nothing outside ``train.py``, ``eval.py``, the study and benchmarks imports it.
"""
