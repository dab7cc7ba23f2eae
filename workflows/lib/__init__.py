"""The machinery the entry points in ``workflows/`` share (a map; nothing is imported here).

- ``job``: input checks, Ray and MLflow start-up, the parent run (every entry point's set-up);
- ``job_config``: the main job's configuration (``JobConfig`` and its presets);
- ``cli``: dataclass configs as command-line options;
- ``train_loop``: the one Ray Train loop every training job runs (``fit``, ``run_worker``);
- ``parsing_task`` / ``forensics_task``: what that loop trains for parsing and for forensics;
- ``evaluation``: the classical baseline and the pooled GM-level tables;
- ``batch_inference``: Ray Data actor pools that run a trained model over a collection;
- ``registry``: the MLflow pyfuncs and the model registry;
- ``figures``, ``progress``: what a person looks at (figures, progress bars);
- ``runtime``: local or cluster Ray and MLflow, where results go;
- ``linking``: same-source linking (were two images made by the same GM?).
"""
