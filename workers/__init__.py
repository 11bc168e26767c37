"""sift workers: one Celery worker process per device, models preloaded, batched inference.

Data path inside a worker: :mod:`workers.tasks` (the Celery task) → :mod:`workers.engine`
(validate, expand items into sequences) → :mod:`workers.batcher` (token-budget batches)
→ :mod:`workers.engine.forward` (tokenize, forward) → :mod:`sift.results_store`.
"""
