"""`python -m fieldsync_device ...`: the CLI without the installed console script."""

from fieldsync_device.cli import main

raise SystemExit(main())
