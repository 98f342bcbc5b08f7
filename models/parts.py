"""The 13 semantic classes every model of the zoo composes, in class-id order.

The harness's class table (harness/data/classes.py) has the same order; models/ does not
import harness/, so the names are written here once for the models.
"""

PART_NAMES = ("background", "face", "eyes", "brows", "mouth", "nose", "ears", "hair", "neck",
              "cloth", "eyeglasses", "hat", "earrings")
