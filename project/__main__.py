import sys

from project.cli import main

sys.exit(main())
