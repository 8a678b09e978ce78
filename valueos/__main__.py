import sys

from valueos.cli import main

sys.exit(main())
