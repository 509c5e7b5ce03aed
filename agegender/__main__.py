import sys

from agegender.cli.parser import main

sys.exit(main())
