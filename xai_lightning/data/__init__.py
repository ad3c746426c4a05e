"""Data: the MVTec AD reader, the synthetic stand-in, transforms, the split and the DataModule."""
