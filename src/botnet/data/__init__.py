"""Datasets: image folders (classification), COCO instances (detection), generated data."""
