"""One training run, whoever is trained (a teacher or a student): the loop and what a run leaves.

`loop` (epochs, batches, evaluation, predict, threads), `checkpoint` (one dict, loaded without
unpickling), `resume` (the whole training state, saved so a killed run continues bit for bit),
`run_dir` (a finished run's directory, written in one atomic step), `history` (TensorBoard events),
`calibration` (ECE and reliability bins).

May import: the foundations and pipeline.data.
"""
