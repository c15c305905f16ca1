"""Importers for policies trained elsewhere (Stable-Baselines3 zips, CleanRL actors, ONNX graphs), torch-free.

Each parser reads untrusted bytes into an MLP actor of the general policy form (`models.imports.mlp.ImportedMlp`)
without ever running code from the file: zips are read entry by entry under size caps, torch's pickled state dicts
through a restricted reader that knows only the tensor-rebuilding globals, ONNX through its protobuf schema.
"""
