import sys

from tunewise.cli import main

sys.exit(main())
