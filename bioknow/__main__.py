import sys

from bioknow.cli import main

sys.exit(main())
