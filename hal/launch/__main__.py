"""python -m hal.launch ... (the same as `hal launch ...`)."""
import sys

from hal.launch.cli import main

sys.exit(main())
