import sys

from semask.cli import main

sys.exit(main())
