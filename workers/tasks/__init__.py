"""The pipeline's tasks, one module per step: ``resolve`` (C-FIND), ``retrieve`` (C-MOVE/C-GET),
``deid`` (one spooled instance), ``forward`` (a finished study to a research PACS), ``sweep``;
``base`` maps the exception hierarchy for all of them, ``completion`` runs what follows a fully
de-identified study. Each task takes an id and moves its row through ``service.jobs``.

Registered names are ``service.core.queues.TaskName``; the Celery app lists the modules.
"""
