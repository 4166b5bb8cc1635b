"""Data modules: each gives the engine `setup(device, seed)`, `train_loader(epoch, skip)`, `val_loader()`."""
