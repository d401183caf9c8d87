import sys

from v2v.cli import main

sys.exit(main())
