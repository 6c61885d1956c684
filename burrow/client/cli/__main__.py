from burrow.client.cli import main

raise SystemExit(main())
