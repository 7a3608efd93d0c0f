"""Dataset readers: each returns plain arrays or a torchvision dataset; the tasks wrap them for training.

One module per dataset family; each real-dataset reader takes `data_root` and raises `paths.MissingDataset`
(saying what to put where) when the files are not there. Nothing is ever downloaded at run time.
"""
