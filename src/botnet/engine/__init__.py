"""The training engine shared by classification and detection.

    from botnet.engine import train, evaluate, TrainConfig, load_config
    summary = train(task, cfg, "runs/exp1")            # or resume="runs/exp1", hooks=[MyHook()]
    metrics = evaluate(task, model, dataset, batch_size=64).metrics
"""
from botnet.engine.config import (  # noqa: F401
    AmpConfig,
    CheckpointConfig,
    DistConfig,
    EmaConfig,
    EvalConfig,
    LogConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    TrainLoopConfig,
    apply_overrides,
    from_dict,
    load_config,
    resolve_run_config,
    save_config,
    to_dict,
)
from botnet.engine.evaluate import autocast, evaluate  # noqa: F401
from botnet.engine.hooks import Hook, StepResult, default_hooks  # noqa: F401
from botnet.engine.parts import TrainParts, build_parts  # noqa: F401
from botnet.engine.run_log import read_metrics_csv  # noqa: F401
from botnet.engine.task import Evaluation, Task  # noqa: F401
from botnet.engine.trainer import NonFiniteLossError, Trainer, train  # noqa: F401
