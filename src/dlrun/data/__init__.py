"""Data modules: each gives the engine `setup(device, seed)`, `train_loader(epoch, skip)`, `val_loader()`.

Under DDP the engine calls `setup(device, seed, rank=r, world_size=n)`: `batch_size` stays the global batch
and each rank's loaders yield its share (InMemoryData and TextData do this for every module built on them).
"""
