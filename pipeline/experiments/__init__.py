"""The experiments family: many student runs from one cache, chosen on held-out rows, reported once.

`base` (what every experiment shares: run a plan JOBS at a time, held-out scores, the teacher's line),
`sweep` (a grid of runs, joblib or Dask), `views` (scratch vs clean-target KD vs replayed views),
`labels` (KD with few hard labels), `patient` (long schedules and view banks).

May import: everything below it (foundations, data, training, cache, student, results). Nothing imports it.
"""
