"""What every run needs whatever its framework: checkpoints saved atomically and loaded safely
(``checkpoint``), the random state of an exact resume (``random_state``), the lr of every update written
and read in one format (``lr_record``, ``lr_per_step.csv``), the process group of a ``torchrun`` launch
(``distributed``) and the stop at a NaN or infinite loss (``errors``: ``NonFiniteLossError``, ``check_finite``).
"""
