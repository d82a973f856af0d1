"""Names and numbers of the Lambda detector's NeXus layout, shared by the reader and the simulator.

See ``../shared/lambda-format.md``: one file per module, optionally split into parts.
"""

DETECTOR_GROUP = "/entry/instrument/detector"
DATA = f"{DETECTOR_GROUP}/data"
DESCRIPTION = f"{DETECTOR_GROUP}/description"
TRANSLATION = f"{DETECTOR_GROUP}/translation/distance"
SEQUENCE_NUMBER = f"{DETECTOR_GROUP}/sequence_number"
PIXEL_MASK = f"{DETECTOR_GROUP}/pixel_mask"
FLATFIELD = f"{DETECTOR_GROUP}/flatfield"
#: the module's shape as the detector wrote it, ``<columns>X<rows>`` (``1554X516``); optional
LAYOUT = f"{DETECTOR_GROUP}/layout"

#: Module shape of the P02.2 Lambda 2M (rows, columns); newer firmware writes 516 x 1556.
MODULE_SHAPE = (516, 1554)
#: Modules of a Lambda 2M: a part lacking one of them is refused unless the user says it is off
#: (``--modules``, the Stitcher's ModuleCount and its switched-off rule).
DEFAULT_MODULES = (1, 2, 3)
#: Module offsets (x = column, y = row) in pixels as recorded at P02.2 (modules 1, 2, 3).
P02_2_OFFSETS = ((0.0, 0.0), (-2.0, 660.0), (-2.0, 1317.0))
#: Pixel size of the Lambda, metres.
PIXEL_SIZE = 55e-6
