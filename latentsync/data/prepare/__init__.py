"""`latentsync prepare`: the published data pipeline (SPEC 11), restartable, on a process pool or a Ray cluster.

    report = prepare_dataset("raw/", "data/", PrepareSettings(resolution=256), engine="local", workers=8)
    print(report.summary())

Modules: `settings` (steps and thresholds), `steps` (what each step does, run in workers), `segments` (shot
detection and cutting), `clipfiles` (aligned and kept clip files, audio shift), `filters` (SyncNet and HyperIQA
behind one interface), `manifest` (the SQLite record of every result), `engines` (process pool, Ray), `runner`
(the walk through the steps), `report` (file lists, summary, score histograms).
"""

from .report import FILESLIST, PrepareReport
from .runner import MANIFEST, prepare_dataset
from .settings import OPTIONAL_STEPS, PrepareSettings

__all__ = ["FILESLIST", "MANIFEST", "OPTIONAL_STEPS", "PrepareReport", "PrepareSettings", "prepare_dataset"]
