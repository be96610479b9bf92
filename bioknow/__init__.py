"""bioknow: how many bits of knowledge a language model stores, per parameter.

The Python API: the functions the `bioknow` command calls, each checking its arguments
as the command does (an InputError names a bad one) and returning what the command
prints as JSON.

    generate(variant, n, seed, out, ...)       a dataset folder; its manifest
    open_dataset(folder)                       a dataset: manifest, fields, population, tokenizer
    train_run(data, model, exposures, out, ...)  a trained run folder; its final state
    evaluate_run(run, people=None, ...)        the bits report of a run (also written to it)
    evaluate_hf(model, data, ...)              the bits report of a transformers causal LM
    probe_run(run, people=None, ...)           the knowledge-extraction probe of a run
    export_run(run, out)                       a transformers checkpoint of a run
    write_corpus(dataset, exposures, out, ...)  the training stream as shards
    run_sweep(config, out, ...)                a grid of runs; its results rows
    plan_sweep(config, device="h100", gpus=1)  what a grid costs before it runs
    rehearse_sweep(config, out)                a grid shrunk and run end to end on the CPU
    plot_sweep(sweep, out, kind="capacity")    a Figure-1 style figure of a sweep
    plot_memorization(sweep, out)              memorized bits against dataset bits (random)
    fit_sweep(sweep, metric=None, against=None)  scaling-law fits of a sweep
    run_info(run)                              what a run folder holds

`bioknow.training.train`, `bioknow.measure.evaluate`, ... are the modules behind them. Importing
bioknow is cheap: each function's module (and torch) is imported on first use.
"""

import importlib

__version__ = "0.2.1"

# name -> (module, function): the Python API, each the function the command line calls
API = {
    "generate": ("bioknow.data.dataset", "generate"),
    "open_dataset": ("bioknow.data.dataset", "open_dataset"),
    "train_run": ("bioknow.training.train", "train"),
    "evaluate_run": ("bioknow.measure.evaluate", "evaluate_run"),
    "evaluate_hf": ("bioknow.measure.evaluate", "evaluate_hf"),
    "probe_run": ("bioknow.measure.probe", "probe_run"),
    "export_run": ("bioknow.measure.export", "export_run"),
    "write_corpus": ("bioknow.data.corpus", "write_corpus"),
    "run_sweep": ("bioknow.study.sweep", "run_sweep"),
    "plan_sweep": ("bioknow.study.plan", "plan"),
    "rehearse_sweep": ("bioknow.cli", "rehearse_sweep"),
    "plot_sweep": ("bioknow.study.plot", "plot"),
    "plot_memorization": ("bioknow.study.plot_memorization", "plot"),
    "fit_sweep": ("bioknow.study.fit", "fit_all"),
    "run_info": ("bioknow.training.runfolder", "info"),
}
__all__ = ["__version__", "InputError", *API]


def __getattr__(name: str):
    if name == "InputError":
        from bioknow.base.errors import InputError

        return InputError
    if name not in API:
        raise AttributeError(f"module 'bioknow' has no attribute {name!r}")
    module, function = API[name]
    return getattr(importlib.import_module(module), function)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
