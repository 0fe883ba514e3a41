"""Training data: `prepare` turns raw talking-head videos into aligned clips; the datasets cut samples from them.

    clips = read_fileslist("data/fileslist.txt")
    dataset = SyncNetDataset(clips, resolution=256, cache_dir="data/cache")
"""

from .datasets import SyncNetDataset, UNetDataset, read_fileslist

__all__ = ["SyncNetDataset", "UNetDataset", "read_fileslist"]
