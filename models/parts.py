"""The 13 semantic classes every model of the zoo composes, in class-id order.

Written once here: models/ does not import harness/, and the harness's class table
(harness/data/classes.py) reads its names from this tuple.
"""

PART_NAMES = ("background", "face", "eyes", "brows", "mouth", "nose", "ears", "hair", "neck",
              "cloth", "eyeglasses", "hat", "earrings")
