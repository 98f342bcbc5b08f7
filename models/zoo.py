"""Imports every model module so that each registers itself (see models.registry)."""

import models.ssgan3d  # noqa: F401
