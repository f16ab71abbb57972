"""Datasets, the target contract, transforms and the Lightning datamodule."""
