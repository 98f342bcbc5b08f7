"""Imports every model module so that each registers itself (see models.registry)."""

import models.cnerf  # noqa: F401
import models.ide3d  # noqa: F401
import models.ssgan2d  # noqa: F401
import models.ssgan3d  # noqa: F401
