import sys

from rhythmd.cli import main

sys.exit(main())
