"""What finished runs become: the report, its figures, and the edge export.

`report` (the results table from every run's metrics.json, mean ± std over seeds), `plots` (its PNG
figures), `export` (ONNX, TorchScript and int8, each checked against the eager model), `latency`
(per-image timing of the exported formats).

May import: the foundations and pipeline.data (the test split an export is checked on).
"""
