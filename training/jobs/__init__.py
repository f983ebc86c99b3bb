"""The jobs: each does one step of the project's work, tracked in MLflow, and returns what it made.

    train      -> a run with params, metrics, grids, the Keras models and the generator as a LoggedModel
    evaluate   -> a run with the sample metrics (also on the generator's LoggedModel), the real-data
                  reference and a report
    register   -> a registry version of the trained LoggedModel, aliased `challenger`, with its evaluation
    promote    -> `champion` moved to the challenger only if the rule says so
    rollback   -> `champion` back at the version it replaced (and the InferenceService with it, if asked)
    deploy     -> a KServe InferenceService pointed at the champion's files, Ready, recorded on the version
    follow     -> deploy, level-triggered: the service kept on whatever `champion` names
    sample     -> generated digits as .npz and a PNG grid
    main       -> train, evaluate, register and promote as nested runs under one parent run
    sweep      -> trials under one parent run, ranked by the promotion rule, the winner registered
    register_and_promote -> the end of `main` and of a sweep: register, then promote that version

and, for the Kubeflow pipeline, `prepare_data`, `open_run`, `train_classifier` and `passes_gate`.
The CLI (and through it the MLproject) and the components each call one job; printing is theirs. Every
job takes its parent MLflow run by id (`parent_run_id`) and optional local output paths, so that a
pipeline task gets its files without downloading what it has just logged.

One module per thing orchestrated: `training_run`, `evaluation_run`, `release` (register, promote,
rollback, deploy), `trials` (sweeps), `end_to_end` (main), `pipeline_steps`, `local_files` (sample, data
download). Importing this package imports neither TensorFlow, JAX, Keras nor MLflow; each job imports
what it needs when it runs.
"""

from training.deploy import follow  # a job as it is
from training.jobs.end_to_end import MainResult, main
from training.jobs.evaluation_run import Evaluated, evaluate
from training.jobs.local_files import download_data, sample
from training.jobs.pipeline_steps import open_run, passes_gate, prepare_data, train_classifier
from training.jobs.release import Promoted, deploy, promote, register, register_and_promote, rollback
from training.jobs.training_run import Trained, train
from training.jobs.trials import SweepFailed, SweepResult, rank_trials, run_pipeline_trial, run_trial, sweep

__all__ = [
    "Evaluated",
    "MainResult",
    "Promoted",
    "SweepFailed",
    "SweepResult",
    "Trained",
    "deploy",
    "download_data",
    "evaluate",
    "follow",
    "main",
    "open_run",
    "passes_gate",
    "prepare_data",
    "promote",
    "rank_trials",
    "register",
    "register_and_promote",
    "rollback",
    "run_pipeline_trial",
    "run_trial",
    "sample",
    "sweep",
    "train",
    "train_classifier",
]
