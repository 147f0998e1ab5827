"""The student family: what trains a student, from the cache or from itself.

`distill` (a student from cached soft targets and hard labels: the KD loss, views replayed, resumable),
`self_distill` (PS-KD: no teacher, no cache, the student's own previous epoch), `bank_fit` (how well a
student fits a bank of cached views against fresh ones).

May import: the foundations, pipeline.data, pipeline.training and pipeline.cache (the reader). Never a
teacher: the student stage's promise is that no teacher is loaded.
"""
