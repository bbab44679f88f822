"""``python -m utils.doctor URL ...``"""

import sys

from utils.doctor.cli import main

sys.exit(main())
