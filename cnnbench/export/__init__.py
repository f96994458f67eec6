"""Taking a trained run out of cnnbench: `export` (ONNX, TorchScript, each checked against PyTorch) and `predict`
(labels for image files, from a run or an exported model).

Both work on the same deployable form of a run (deployable.py): its model behind the preprocessing it was trained
with, so that an exported file takes pixels as decoded and needs nothing of cnnbench. exporting.py writes and checks
the files; predicting.py reads images and writes predictions.
"""
