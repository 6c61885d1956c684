from burrow.cli import main

raise SystemExit(main())
