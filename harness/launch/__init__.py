"""Sweeps: expanding sweep files into trials and running them in-process, as local processes
or as SLURM jobs (submitit), with the sweep's state kept in its directory.

    spec.py       sweep-file schema, expansion into trials with stable ids
    state.py      the sweep directory: sweep.yaml, state.json, trial.json, trial outcomes
    trial.py      one trial as a checkpointable job: train, evaluate, result.json
    executors.py  in-process, local processes (submitit), SLURM (submitit); `auto`
    slurm.py      cluster detection and profiles (slurm/profiles/*.yaml)
    driver.py     submits a grid's trials, re-attaches to running jobs, waits
    search.py     Optuna search: storage, workers, stale trials, pruning
    display.py    the live table (TTY) or status lines (logs)
"""
