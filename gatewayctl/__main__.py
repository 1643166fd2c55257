"""python -m gatewayctl: the same as the gatewayctl command."""

import sys

from gatewayctl.cli import main

sys.exit(main())
