"""FedGIN for NVIDIA FLARE.

The sub-packages are the pipeline's stages, each importing only the ones before it (``tests/test_layout.py``)::

    common       checked values, output paths, atomic writes
    phantom      synthetic CT / MRI / heart source volumes
    data         dataset adapters, preprocessing, partitions -> per-site slice cache + datalist.json
    augment      GIN and the baseline augmentations
    engine       methods, model, loss, training loop, evaluation, model files; one site's round
    flare        the FLARE Executor, aggregator, persistor, filters, jobs, simulator / POC / provisioning
    reporting    statistics, tables, curves, overlays, augmentation previews
    inference    model file + NIfTI -> label maps
    experiments  the demo, the comparison grid and the paper's experiments
    cli          the ``fedgin`` command line (thin argparse shells)
"""

__version__ = "0.1.0"
