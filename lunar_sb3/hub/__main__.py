import sys

from lunar_sb3.hub.cli import main

sys.exit(main())
