"""The lip-sync pipeline: components in, lip-synced video out.

Names are imported on first use: the job types and input checks (`job`) load no model code.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_GUIDANCE": ".job", "DEFAULT_STEPS": ".job", "LipSyncJob": ".job", "LipSyncOutput": ".job",
    "RunOptions": ".job", "RunReport": ".job", "check_inputs": ".job", "CHUNK_FRAMES": ".lipsync",
    "LipSyncPipeline": ".lipsync",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
