import sys

from logflume.cli import main

sys.exit(main())
