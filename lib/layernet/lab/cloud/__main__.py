"""`python -m layernet.lab.cloud`: the cloud process (see server.py)."""
import sys

from layernet.lab.cloud.server import main

sys.exit(main())
