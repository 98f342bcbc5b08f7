"""What training, evaluation, benchmarks and reports share at run time: the device
(device.py), camera samplers (cameras.py), checkpoints and the snapshot loader
(checkpoint.py) and sample grids with their fixed views (samples.py)."""
