"""The studio: look at and edit a trained run's portraits (`python -m harness.studio RUN_DIR`).

engine.py     what the studio does with a run's EMA generator (render, part edits with their
              D_mean, progressive generation, interpolation, turntables), no user interface
inversion.py  real portraits into the latent space (also `python -m harness.invert`)
app.py        the Gradio page over the two
"""
