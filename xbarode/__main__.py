from xbarode.cli import main

raise SystemExit(main())
