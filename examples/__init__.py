"""The recipes: runnable training scripts, installed with the package as `vitpose_hf.recipes`.

`python examples/run_pose.py ...` and `vitpose-hf train ...` run the same file
(`vitpose_hf.recipes.run_pose`); `run_mae.py` and `run_distillation.py` are the MAE pre-training and
distillation recipes.
"""
