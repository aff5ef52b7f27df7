"""models/pythia-micro, the project's default model: its data (data.py), shape, initialisation
and checkpoints (model.py), training (train.py) and evaluation (evaluate.py). The command lines
are export/prepare_micro_data.py and export/train_micro.py.
"""
