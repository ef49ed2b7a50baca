from pulmo.cli import main

raise SystemExit(main())
