import sys

from minisft.cli.main import main

sys.exit(main())
