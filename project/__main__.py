import sys

from project.commands.cli import main

sys.exit(main())
