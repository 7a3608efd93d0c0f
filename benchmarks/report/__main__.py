"""`python -m benchmarks.report DIR` = `sema-report DIR`."""

import sys

from benchmarks.report.cli import main

sys.exit(main())
