"""Serving LatentSync: a persistent job queue with model workers, an HTTP API and a web page in one process
(`latentsync serve`), and batch runs over a jobs file (`latentsync batch`).

Modules: `store` (the data folder and its SQLite job index), `uploads` (checking submitted media before a job is
queued), `worker` (threads that keep the models loaded and run queued jobs), `app` (FastAPI routes, token, errors),
`webui` (the Gradio page), `batch` (jobs files, local and Ray engines).
"""

import os

# Gradio reads this when imported: the web page must not report usage anywhere (it talks to this server only).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
