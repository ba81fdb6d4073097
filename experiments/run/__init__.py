"""One run: ``runner.run(config)`` checks nothing twice, loads the data and the model, adapts, trains,
evaluates and writes the record. ``app`` is the Hydra glue of ``run.py``; ``data``, ``models``, ``train``,
``provenance`` and ``demo_task`` are the steps."""
