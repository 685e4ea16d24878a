"""Training side: data sets, the training loop, checkpoints, export and evaluation.

Run as `python -m training {train,export,evaluate,sweep} ...`.
"""
