"""The teacher family: where a teacher comes from, and the one pass that runs it.

`fit` (train a registered teacher, resumable), `source` (load a teacher: a softcache checkpoint, a
TorchScript or torch.export file, or the user's module:factory), `pt2_archive` (read a .pt2 archive's index
before anything loads it), `logits_pass` (the teacher pass that writes the cache, sharded, resumable),
`rescore` (re-run a teacher over a cache's rows and compare).

May import: the foundations, pipeline.data, pipeline.training and pipeline.cache.reader (the format it writes).
"""
