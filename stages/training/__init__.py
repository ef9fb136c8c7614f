"""The engine of ``train-student``: its config and checks (``config``), the model, optimiser and
step (``trainer``), the epoch loop (``loop``), the (seed, epoch) data order (``sampler``), the
run's records (``log``, ``board``), the store identity a run trains on (``identity``) and
torchrun's processes (``distributed``)."""
