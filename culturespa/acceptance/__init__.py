"""The GPU acceptance run (``python -m culturespa.acceptance --out DIR [--dry]``): one command that settles the items of
the GPU checklist on a CUDA machine (answering, LoRA/QLoRA SFT, FSDP, evaluation of the QLoRA adapter, the paper's
run time), each step timed and each failure recorded without stopping the rest. ``--dry`` runs the same steps on the
CPU with a tiny random model, so the code path is tested before a GPU is ever lent."""
