"""Networks (torch), the actor weights file format and the torch-free actor used for serving.

Importing this package does not import torch: `models.networks` does, and only the trainer imports it.
"""
